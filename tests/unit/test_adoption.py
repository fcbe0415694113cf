"""Adoption, as tables: which stored replicas a restarted control plane
keeps, which replicas an observation declares dead, which running replicas
nobody knows, and which stops are left unfinished."""

from __future__ import annotations

import dataclasses

import pytest

from controlplane.reconciler.adoption import (
    Observation,
    adopt,
    dead,
    unfinished_stops,
    unknown,
)
from controlplane.reconciler.lifecycle import Phase, Replica
from controlplane.records import ReplicaRecord, ReplicaState
from executors.base import ReplicaRef

S = ReplicaState


def ref(replica_id: str) -> ReplicaRef:
    return ReplicaRef(executor="x", replica_id=replica_id, address="127.0.0.1:9")


def stored(replica_id: str, state: ReplicaState) -> ReplicaRecord:
    return ReplicaRecord(replica_id, "d", "v1", "h", state, "x", ref=ref(replica_id))


def test_a_restart_forgets_replicas_that_were_starting() -> None:
    records = [stored(f"r{s.value}", s) for s in ReplicaState]
    kept, forgotten = adopt(records)
    assert [r.record.state for r in kept] == [s for s in ReplicaState if s != S.STARTING]
    assert [r.state for r in forgotten] == [S.STARTING]


def running(replica_id: str, ref_since: float = 5.0, phase: Phase = Phase.RUNNING) -> Replica:
    state = S.PENDING if phase == Phase.PENDING else S.RUNNING
    record = stored(replica_id, state)
    return Replica(record, phase, ref_since_mono_s=ref_since)


@pytest.mark.parametrize(
    ("replica", "observation", "is_dead"),
    [
        (running("r"), Observation(10.0, {}), True),  # asked after its ref: gone
        (running("r"), Observation(10.0, {"r": ref("r")}), False),
        (running("r"), None, False),  # a failed look judges nobody
        (running("r", ref_since=10.0), Observation(9.0, {}), False),  # asked before it ran
        (running("r", phase=Phase.SICK), Observation(10.0, {}), True),
        (running("r", phase=Phase.RECONFIGURING), Observation(10.0, {}), True),
        (running("r", phase=Phase.PENDING), Observation(10.0, {}), False),  # never ran
    ],
)
def test_dead_replicas(replica: Replica, observation: Observation | None, is_dead: bool) -> None:
    assert dead([replica], {"x": observation}) == ([replica] if is_dead else [])


def test_a_replica_of_an_executor_not_asked_is_not_judged() -> None:
    assert dead([running("r")], {}) == []


@pytest.mark.parametrize(
    ("known", "observations", "found"),
    [
        ({"a"}, {"x": Observation(0.0, {"a": ref("a")})}, []),
        ({"a"}, {"x": Observation(0.0, {"a": ref("a"), "b": ref("b")})}, [("x", "b")]),
        (set(), {"x": None, "y": Observation(0.0, {"c": ref("c")})}, [("y", "c")]),
    ],
)
def test_unknown_replicas(
    known: set[str], observations: dict[str, Observation | None], found: list[tuple[str, str]]
) -> None:
    assert [(e, r.replica_id) for e, r in unknown(known, observations)] == found


@pytest.mark.parametrize(
    ("phase", "is_unfinished"),
    [
        (Phase.STALLED, True),
        (Phase.STOPPING, False),
        (Phase.DRAINING, False),
        (Phase.RUNNING, False),
    ],
)
def test_unfinished_stops(phase: Phase, is_unfinished: bool) -> None:
    replica = dataclasses.replace(running("r"), phase=phase)
    assert unfinished_stops([replica]) == ([replica] if is_unfinished else [])
