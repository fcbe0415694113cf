"""A replica's phases: the transition table, what each phase is stored as,
and where an adopted replica starts. Every pair of phases is tried."""

from __future__ import annotations

import itertools

import pytest

from controlplane.reconciler.lifecycle import TRANSITIONS, IllegalTransition, Phase, Replica
from controlplane.records import ReplicaRecord, ReplicaState
from executors.base import ReplicaRef

P = Phase
S = ReplicaState
REF = ReplicaRef(executor="x", replica_id="r", address="127.0.0.1:1")

# (from, to, stored state after the move; None: the move raises)
MOVES = [
    (P.PENDING, P.UNPLACEABLE, S.PENDING),
    (P.PENDING, P.STARTING, S.STARTING),
    (P.PENDING, P.GONE, S.PENDING),  # a pending replica that is stopped
    (P.UNPLACEABLE, P.UNPLACEABLE, S.PENDING),  # still fits nowhere
    (P.UNPLACEABLE, P.STARTING, S.STARTING),
    (P.UNPLACEABLE, P.GONE, S.PENDING),
    (P.STARTING, P.RUNNING, S.RUNNING),
    (P.STARTING, P.CANCELLED, S.STOPPING),  # stopped during its launch
    (P.STARTING, P.GONE, S.STARTING),  # its launch failed
    (P.CANCELLED, P.STALLED, S.STOPPING),  # launched anyway: to be stopped
    (P.CANCELLED, P.GONE, S.STOPPING),
    (P.RUNNING, P.RECONFIGURING, S.RUNNING),
    (P.RUNNING, P.SICK, S.RUNNING),
    (P.RUNNING, P.DRAINING, S.DRAINING),
    (P.RUNNING, P.STOPPING, S.STOPPING),
    (P.RUNNING, P.GONE, S.RUNNING),  # died
    (P.RECONFIGURING, P.RUNNING, S.RUNNING),
    (P.RECONFIGURING, P.SICK, S.RUNNING),
    (P.RECONFIGURING, P.GONE, S.RUNNING),
    (P.SICK, P.DRAINING, S.DRAINING),
    (P.SICK, P.STOPPING, S.STOPPING),
    (P.SICK, P.GONE, S.RUNNING),
    (P.DRAINING, P.STOPPING, S.STOPPING),
    (P.DRAINING, P.STALLED, S.DRAINING),  # a failed stop keeps its stored state
    (P.STOPPING, P.STALLED, S.STOPPING),
    (P.STOPPING, P.GONE, S.STOPPING),
    (P.STALLED, P.STOPPING, S.STOPPING),
]
ALLOWED = {(a, b): state for a, b, state in MOVES}
STORED = {
    P.PENDING: S.PENDING, P.UNPLACEABLE: S.PENDING, P.STARTING: S.STARTING,
    P.CANCELLED: S.STOPPING, P.RUNNING: S.RUNNING, P.RECONFIGURING: S.RUNNING,
    P.SICK: S.RUNNING, P.DRAINING: S.DRAINING, P.STOPPING: S.STOPPING,
    P.STALLED: S.STOPPING, P.GONE: S.STOPPING,
}  # fmt: skip


def replica(phase: Phase) -> Replica:
    record = ReplicaRecord("r", "d", "v1", "h", STORED[phase], "x", ref=REF)
    return Replica(record, phase)


def test_the_table_is_exactly_these_moves() -> None:
    table = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert table == set(ALLOWED)
    assert set(TRANSITIONS) == set(Phase)


@pytest.mark.parametrize(("before", "after"), list(itertools.product(Phase, Phase)))
def test_every_move_is_allowed_or_raises(before: Phase, after: Phase) -> None:
    if (before, after) not in ALLOWED:
        with pytest.raises(IllegalTransition, match=f"from {before} to {after}"):
            replica(before).moved(after)
        return
    moved = replica(before).moved(after, message="why")
    assert (moved.phase, moved.record.state, moved.record.message) == (
        after,
        ALLOWED[before, after],
        "why",
    )


@pytest.mark.parametrize(
    ("stored", "phase"),
    [
        (S.PENDING, P.PENDING),
        (S.RUNNING, P.RUNNING),
        (S.DRAINING, P.STALLED),  # nothing stops it yet: the loop finishes the stop
        (S.STOPPING, P.STALLED),
    ],
)
def test_an_adopted_replica_starts_owned_by_nobody(stored: ReplicaState, phase: Phase) -> None:
    assert Replica.adopted(ReplicaRecord("r", "d", "v1", "h", stored, "x")).phase == phase


@pytest.mark.parametrize(
    ("phase", "has_ref", "routable"),
    [
        (P.RUNNING, True, True),
        (P.RECONFIGURING, True, True),
        (P.RUNNING, False, False),
        (P.SICK, True, False),
        (P.DRAINING, True, False),
        (P.STARTING, True, False),
    ],
)
def test_routable_replicas(phase: Phase, has_ref: bool, routable: bool) -> None:
    r = replica(phase)
    if not has_ref:
        r = r.changed(ref=None)
    assert r.is_routable == routable
