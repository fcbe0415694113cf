"""The per-pass budget, as tables: however far observed is from desired, one
pass hands out at most `starts` starts (counting replicas still STARTING)
and `stops` stops or reconfigures, urgent ones first."""

from __future__ import annotations

import pytest

from controlplane.reconciler.plan import (
    Budget,
    Desired,
    Observed,
    ReconfigureReplica,
    StartReplica,
    StopReplica,
    plan,
)
from controlplane.records import ReplicaState

STARTING, RUNNING = ReplicaState.STARTING, ReplicaState.RUNNING


def want(target: int, name: str = "d", version: str = "v1", **kw: object) -> Desired:
    return Desired(name=name, version=version, code_hash="h", target=target, **kw)  # type: ignore[arg-type]


def reps(
    count: int, state: ReplicaState = RUNNING, name: str = "d", **kw: object
) -> list[Observed]:
    return [
        Observed(
            id=f"{name}-{i:05}", deployment=name, version="v1", code_hash="h", state=state, **kw
        )  # type: ignore[arg-type]
        for i in range(count)
    ]


def counts(actions: list) -> tuple[int, int, int]:
    return (
        sum(isinstance(a, StartReplica) for a in actions),
        sum(isinstance(a, StopReplica) for a in actions),
        sum(isinstance(a, ReconfigureReplica) for a in actions),
    )


CASES = [
    # (name, desired, observed, budget, (starts, stops, reconfigures))
    ("scale up 0 -> 100000", [want(100_000)], [], Budget(50, 50), (50, 0, 0)),
    ("starting ones use the budget", [want(1000)], reps(30, STARTING), Budget(50, 50), (20, 0, 0)),
    ("budget spent by starting", [want(1000)], reps(80, STARTING), Budget(50, 50), (0, 0, 0)),
    ("scale down 1000 -> 0", [want(0)], reps(1000), Budget(50, 50), (0, 50, 0)),
    ("deployment gone", [], reps(1000), Budget(50, 10), (0, 10, 0)),
    ("reconfigure 1000", [want(1000, user_config='{"a": 1}')], reps(1000), Budget(5, 7), (0, 0, 7)),
    ("within budget: all", [want(3)], reps(1), Budget(50, 50), (2, 0, 0)),
    ("no budget: all", [want(300)], [], None, (300, 0, 0)),
]


@pytest.mark.parametrize(
    ("desired", "observed", "budget", "expected"),
    [pytest.param(d, o, b, e, id=n) for n, d, o, b, e in CASES],
)
def test_one_pass_stays_within_its_budget(
    desired: list[Desired], observed: list[Observed], budget: Budget | None, expected: tuple
) -> None:
    assert counts(plan(desired, observed, budget)) == expected


def test_sick_replicas_are_stopped_before_scaling_down() -> None:
    sick = reps(3, name="d", is_healthy=False)
    extra = [
        Observed(id=f"x-{i}", deployment="d", version="v1", code_hash="h", state=RUNNING)
        for i in range(10)
    ]
    actions = plan([want(0)], extra + sick, Budget(1, 3))
    assert {a.replica_id for a in actions if isinstance(a, StopReplica)} == {r.id for r in sick}


def test_a_big_scale_up_converges_over_passes() -> None:
    """Each pass's starts become STARTING, then RUNNING on the next: the
    target is reached, never overshot, in target / budget passes or so."""
    observed: list[Observed] = []
    passes = 0
    while passes < 100:
        passes += 1
        for i, replica in enumerate(observed):
            if replica.state == STARTING:
                observed[i] = Observed(replica.id, "d", "v1", "h", RUNNING)
        started = plan([want(1000)], observed, Budget(50, 50))
        assert all(isinstance(a, StartReplica) for a in started)
        observed += [
            Observed(f"n{len(observed) + i}", "d", "v1", "h", STARTING)
            for i, _ in enumerate(started)
        ]
        if len(observed) == 1000 and all(r.state == RUNNING for r in observed):
            break
    assert len(observed) == 1000 and passes <= 22
