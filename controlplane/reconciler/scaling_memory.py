"""The autoscaler's memory: per autoscaled deployment, its recent ongoing
samples and its AutoscalerState. The policy itself is `controlplane.autoscaler`
(pure); this holds what it needs between calls, in memory only.

A new apply of a deployment (a new generation) starts it over from
initial_replicas (or min_replicas). A deployment first seen with replicas
already live (a restarted control plane adopting them) starts from that many,
so a restart does not scale an autoscaled deployment back down at once.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Iterable

from controlplane.autoscaler import AutoscalerState, decide
from controlplane.records import DeploymentRecord
from controlplane.spec import Autoscaling

log = logging.getLogger("capstan.controlplane")


@dataclasses.dataclass
class _Scaled:
    """One deployment's autoscaler memory."""

    generation: int
    policy: Autoscaling
    state: AutoscalerState
    # (monotonic seconds, total ongoing requests), oldest first.
    samples: collections.deque[tuple[float, float]] = dataclasses.field(
        default_factory=collections.deque
    )
    next_poll_mono_s: float = 0.0
    is_scaling_up: bool = False


class ScalingMemory:
    """Every autoscaled deployment's samples and decision, by name."""

    def __init__(self) -> None:
        self._scaled: dict[str, _Scaled] = {}
        # (deployment, why) of each change of target not yet recorded.
        self._decisions: list[tuple[str, str]] = []

    def target(self, record: DeploymentRecord, live: int) -> int:
        """The replicas `record` should run now; `live` is how many it has
        (used only the first time this process sees it)."""
        return self._sync(record, live).state.target

    def is_scaling_up(self, name: str) -> bool:
        """The last change was an increase (a shortfall is then expected)."""
        scaled = self._scaled.get(name)
        return scaled is not None and scaled.is_scaling_up

    def settled(self, name: str) -> None:
        """The deployment reached its target."""
        scaled = self._scaled.get(name)
        if scaled is not None:
            scaled.is_scaling_up = False

    def due(self, records: Iterable[DeploymentRecord], now_mono_s: float) -> list[str]:
        """Autoscaled deployments whose metrics should be polled now."""
        names = []
        for record in records:
            scaled = self._scaled.get(record.name)
            if scaled is None or record.is_deleting or record.is_halted:
                continue
            if scaled.generation == record.generation and now_mono_s >= scaled.next_poll_mono_s:
                scaled.next_poll_mono_s = now_mono_s + scaled.policy.metrics_interval_s
                names.append(record.name)
        return names

    def next_poll_mono_s(self) -> float | None:
        return min((s.next_poll_mono_s for s in self._scaled.values()), default=None)

    def sample(self, name: str, total: float | None, now_mono_s: float) -> bool:
        """Records one poll's total ongoing requests (None: no replica
        answered) and decides. Returns True when the target changed."""
        scaled = self._scaled.get(name)
        if scaled is None:
            return False
        policy, samples = scaled.policy, scaled.samples
        if total is not None:
            samples.append((now_mono_s, total))
        while samples and samples[0][0] < now_mono_s - policy.look_back_period_s:
            samples.popleft()
        recent = [ongoing for _, ongoing in samples]
        before = scaled.state.target
        target, scaled.state = decide(recent, policy, before, scaled.state, now_mono_s)
        if target == before:
            return False
        mean = sum(recent) / len(recent)
        per_replica = policy.target_num_ongoing_requests_per_replica
        why = f"{before} -> {target} replicas (ongoing {mean:.1f}, target {per_replica:g}/replica)"
        log.info("autoscaling %s: %s", name, why)
        self._decisions.append((name, why))
        scaled.is_scaling_up = target > before
        return True

    def take_decisions(self) -> list[tuple[str, str]]:
        """The (deployment, why) of each change of target since the last call."""
        decisions, self._decisions = self._decisions, []
        return decisions

    def forget_except(self, names: Iterable[str]) -> None:
        """Drops the memory of deployments no longer stored."""
        keep = set(names)
        for name in [n for n in self._scaled if n not in keep]:
            del self._scaled[name]

    def _sync(self, record: DeploymentRecord, live: int) -> _Scaled:
        policy = record.spec.autoscaling
        assert policy is not None, "only autoscaled deployments have an autoscaler"
        scaled = self._scaled.get(record.name)
        if scaled is not None and scaled.generation == record.generation:
            return scaled
        state = AutoscalerState.initial(policy)
        if scaled is None and live > 0:
            state = AutoscalerState(min(max(live, policy.min_replicas), policy.max_replicas))
        scaled = self._scaled[record.name] = _Scaled(record.generation, policy, state)
        return scaled
