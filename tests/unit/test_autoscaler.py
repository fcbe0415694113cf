"""The autoscaling policy, as tables: each case feeds `decide` a series of
(now, ongoing samples) and checks the target after every step."""

from __future__ import annotations

import pytest

from controlplane.autoscaler import AutoscalerState, Direction, decide, desired_replicas
from controlplane.spec import Autoscaling

# Ray 1.x-like delays, a roomier range and 10 requests per replica.
P = Autoscaling(
    min_replicas=1,
    max_replicas=5,
    target_num_ongoing_requests_per_replica=10,
    upscale_delay_s=30,
    downscale_delay_s=600,
)
ZERO_MIN = Autoscaling(
    min_replicas=0,
    max_replicas=3,
    target_num_ongoing_requests_per_replica=2,
    upscale_delay_s=30,
    downscale_delay_s=60,
)
NO_DELAY = Autoscaling(
    min_replicas=1,
    max_replicas=3,
    target_num_ongoing_requests_per_replica=1,
    upscale_delay_s=0,
    downscale_delay_s=0,
)

Steps = list[tuple[float, list[float], int]]  # (now, samples, target after)

CASES: list[tuple[str, Autoscaling, int, Steps]] = [
    ("steady at target", P, 2, [(0, [20.0], 2), (100, [15.0, 20.0], 2), (1000, [11.0], 2)]),
    ("no samples: hold", P, 3, [(0, [], 3), (10_000, [], 3)]),
    ("up after the delay", P, 1, [(0, [25.0], 1), (29, [25.0], 1), (30, [25.0], 3)]),
    ("no up before the delay", P, 1, [(0, [50.0], 1), (29.9, [50.0], 1)]),
    ("up by the latest desired", P, 1, [(0, [15.0], 1), (20, [35.0], 1), (30, [45.0], 5)]),
    ("up resets when back at current", P, 1,
     [(0, [25.0], 1), (20, [5.0], 1), (31, [25.0], 1), (60, [25.0], 1), (61, [25.0], 3)]),
    ("flip down-to-up resets", P, 3,
     [(0, [5.0], 3), (500, [45.0], 3), (529, [45.0], 3), (530, [45.0], 5)]),
    ("flip up-to-down resets", P, 3,
     [(0, [45.0], 3), (20, [5.0], 3), (40, [5.0], 3), (619, [5.0], 3), (620, [5.0], 1)]),
    ("down only after the longer delay", P, 4,
     [(0, [10.0], 4), (30, [10.0], 4), (599, [10.0], 4), (600, [10.0], 1)]),
    ("mean of the look-back decides", P, 1,
     [(0, [0.0, 0.0, 60.0], 1), (30, [0.0, 0.0, 60.0], 2)]),
    ("clamped to max", P, 5, [(0, [1000.0], 5), (100, [1000.0], 5)]),
    ("clamped to min", P, 2, [(0, [0.0], 2), (600, [0.0], 1), (5000, [0.0], 1)]),
    ("zero ongoing with min 0 goes to zero", ZERO_MIN, 2,
     [(0, [0.0], 2), (59, [0.0], 2), (60, [0.0], 0), (100, [0.0], 0)]),
    ("cold start skips the delay", ZERO_MIN, 0, [(0, [0.0, 1.0], 1)]),
    ("cold start scales to desired", ZERO_MIN, 0, [(0, [5.0], 3)]),
    ("cold start clamps to max", ZERO_MIN, 0, [(0, [100.0], 3)]),
    ("at zero, no requests: stay", ZERO_MIN, 0, [(0, [0.0], 0), (1000, [0.0], 0)]),
    ("no delays: follow at once", NO_DELAY, 1,
     [(0, [6.0], 3), (0.2, [2.0], 2), (0.4, [0.0], 1), (0.6, [2.5], 3)]),
    ("fractional demand rounds up", NO_DELAY, 1, [(0, [1.1], 2)]),
]  # fmt: skip


@pytest.mark.parametrize(("policy", "start", "steps"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_decide(policy: Autoscaling, start: int, steps: Steps) -> None:
    state = AutoscalerState(start)
    for now, samples, expected in steps:
        target, state = decide(samples, policy, state.target, state, now)
        assert (now, target) == (now, expected)
        assert state.target == target


@pytest.mark.parametrize(
    ("samples", "policy", "desired"),
    [
        ([0.0], P, 1),
        ([10.0], P, 1),
        ([10.5], P, 2),
        ([30.0, 10.0], P, 2),
        ([10_000.0], P, 5),
        ([0.0], ZERO_MIN, 0),
        ([0.5], ZERO_MIN, 1),
    ],
)
def test_desired_replicas(samples: list[float], policy: Autoscaling, desired: int) -> None:
    assert desired_replicas(samples, policy) == desired


HALF = Autoscaling(min_replicas=1, max_replicas=20, target_num_ongoing_requests_per_replica=1,
                   upscaling_factor=0.5, downscaling_factor=0.25)  # fmt: skip


@pytest.mark.parametrize(
    ("samples", "current", "desired"),
    [
        ([10.0], 2, 6),  # up: half of the way from 2 to 10
        ([3.0], 2, 3),  # up by half a replica: still one more
        ([2.0], 10, 8),  # down: a quarter of the way from 10 to 2
        ([10.0], 0, 10),  # from zero there is no step to shrink
        ([100.0], 2, 20),  # still clamped to max_replicas
    ],
)
def test_scaling_factors_shrink_each_step(samples: list[float], current: int, desired: int) -> None:
    assert desired_replicas(samples, HALF, current) == desired


@pytest.mark.parametrize(
    ("state", "samples", "now", "direction", "since"),
    [
        (AutoscalerState(1), [25.0], 5.0, Direction.UP, 5.0),
        (AutoscalerState(1, Direction.UP, 2.0), [25.0], 5.0, Direction.UP, 2.0),
        (AutoscalerState(3, Direction.UP, 2.0), [5.0], 5.0, Direction.DOWN, 5.0),
        (AutoscalerState(3, Direction.DOWN, 2.0), [30.0], 5.0, Direction.NONE, None),
    ],
)
def test_state_remembers_direction_and_since(
    state: AutoscalerState, samples: list[float], now: float, direction: Direction, since: float
) -> None:
    _, after = decide(samples, P, state.target, state, now)
    assert (after.direction, after.since_mono_s) == (direction, since)


@pytest.mark.parametrize(
    ("policy", "start"),
    [
        (P, 1),
        (Autoscaling(min_replicas=1, max_replicas=4, initial_replicas=3), 3),
        (ZERO_MIN, 0),
    ],
)
def test_initial_state(policy: Autoscaling, start: int) -> None:
    assert AutoscalerState.initial(policy) == AutoscalerState(start)
