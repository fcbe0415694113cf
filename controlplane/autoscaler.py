"""The autoscaling policy: recent ongoing-request samples -> a replica count.
Pure: no I/O, no clock, no environment, so every rule is tested with tables.

Rules (Ray Serve's, simplified to whole replicas):
- desired = ceil(mean total ongoing / target_num_ongoing_requests_per_replica),
  clamped to [min_replicas, max_replicas]. The caller passes only the samples
  taken within look_back_period_s; with none, nothing changes.
- The target moves only after desired has pointed the same way (up or down)
  without a break for upscale_delay_s or downscale_delay_s. A flip of
  direction, or desired returning to the current count, starts over.
- Cold start: at zero replicas, any ongoing request scales to at least one at
  once, ignoring the delay.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Sequence

from controlplane.spec import Autoscaling


class Direction(enum.IntEnum):
    """Which way the desired count points from the current one."""

    DOWN = -1
    NONE = 0
    UP = 1


@dataclasses.dataclass(frozen=True)
class AutoscalerState:
    """One deployment's autoscaler: its decision, and since when (monotonic
    seconds) a count in `direction` has been wanted (None: none is)."""

    target: int
    direction: Direction = Direction.NONE
    since_mono_s: float | None = None

    @classmethod
    def initial(cls, policy: Autoscaling) -> AutoscalerState:
        """Where a newly applied deployment starts: initial_ or min_replicas."""
        start = policy.initial_replicas
        return cls(policy.min_replicas if start is None else start)


def desired_replicas(ongoing: Sequence[float], policy: Autoscaling, current: int = 0) -> int:
    """What the mean of `ongoing` (total requests, not per replica) asks for,
    clamped to the policy's bounds. `ongoing` must not be empty.

    With an upscaling_factor or downscaling_factor (Ray Serve 2.x), a step
    from `current` is that fraction of the full step: 0.5 moves half way."""
    mean = sum(ongoing) / len(ongoing)
    ideal = mean / policy.target_num_ongoing_requests_per_replica
    factor = policy.upscaling_factor if ideal > current else policy.downscaling_factor
    if current > 0 and factor is not None:
        ideal = current + (ideal - current) * factor
    wanted = math.ceil(ideal - 1e-9)  # 2.0000000001 from float error is still 2
    return min(max(wanted, policy.min_replicas), policy.max_replicas)


def decide(
    ongoing: Sequence[float],
    policy: Autoscaling,
    current: int,
    state: AutoscalerState,
    now_mono_s: float,
) -> tuple[int, AutoscalerState]:
    """The replica count to run now, and the state to pass next time.
    `current` is the count the deployment is scaled to (normally
    `state.target`); `ongoing` the total ongoing samples in the look-back."""
    if not ongoing:
        return current, dataclasses.replace(state, target=current)
    desired = desired_replicas(ongoing, policy, current)
    if current == 0 and any(sample > 0 for sample in ongoing):
        return _act(max(1, desired))
    direction = Direction((desired > current) - (desired < current))
    if direction == Direction.NONE:
        return current, AutoscalerState(current)
    since = state.since_mono_s
    if direction != state.direction or since is None:
        since = now_mono_s
    delay_s = policy.upscale_delay_s if direction == Direction.UP else policy.downscale_delay_s
    if now_mono_s - since >= delay_s:
        return _act(desired)
    return current, AutoscalerState(current, direction, since)


def _act(target: int) -> tuple[int, AutoscalerState]:
    return target, AutoscalerState(target)
