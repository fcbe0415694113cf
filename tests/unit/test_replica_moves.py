"""What a planned start (placement) and a planned stop do to a replica."""

from __future__ import annotations

import pytest

from controlplane.reconciler.lifecycle import Phase, Replica
from controlplane.reconciler.plan import StartReplica
from controlplane.reconciler.replica_moves import new_replica, placed, stopped
from controlplane.records import DeploymentRecord, ReplicaRecord, ReplicaState
from controlplane.scheduler import NoFit, Placement
from controlplane.spec import DeploymentSpec

P = Phase
S = ReplicaState
SPOT = Placement(node="n1", num_cpus=1.0)


def replica(phase: Phase, stored: ReplicaState = S.RUNNING, message: str = "") -> Replica:
    return Replica(ReplicaRecord("r", "d", "v1", "h", stored, "x", message=message), phase)


def test_a_new_replica_is_pending_with_the_spec_config() -> None:
    spec = DeploymentSpec(name="d", import_path="app:D", user_config='{"a": 1}')
    record = DeploymentRecord(name="d", spec=spec, version="v2", generation=1)
    r = new_replica(StartReplica("d", "v2", "h2", "scale up"), record, "d-1", 5.0)
    assert (r.phase, r.id, r.record.version, r.record.code_hash) == (P.PENDING, "d-1", "v2", "h2")
    assert (r.record.user_config, r.record.started_at) == ('{"a": 1}', 5.0)
    assert r.record.executor == spec.executor


@pytest.mark.parametrize(
    ("before", "placement", "phase", "message", "node"),
    [
        (P.PENDING, SPOT, P.STARTING, "", "n1"),
        (P.PENDING, NoFit("no room"), P.UNPLACEABLE, "no room", ""),
        (P.UNPLACEABLE, NoFit("still none"), P.UNPLACEABLE, "still none", ""),
        (P.UNPLACEABLE, SPOT, P.STARTING, "", "n1"),  # the old reason goes
    ],
)
def test_placement_starts_a_replica_or_leaves_it_pending_with_why(
    before: Phase, placement: Placement | NoFit, phase: Phase, message: str, node: str
) -> None:
    after = placed(replica(before, S.PENDING, message="was full"), placement, 7.0)
    assert (after.phase, after.record.message, after.record.node) == (phase, message, node)
    assert after.record.started_at == (7.0 if phase == P.STARTING else 0.0)


@pytest.mark.parametrize(
    ("before", "stored", "drain", "phase", "state"),
    [
        (P.PENDING, S.PENDING, True, P.GONE, S.PENDING),  # nothing runs: forgotten
        (P.UNPLACEABLE, S.PENDING, True, P.GONE, S.PENDING),
        (P.STARTING, S.STARTING, True, P.CANCELLED, S.STOPPING),  # its launch stops it
        (P.RUNNING, S.RUNNING, True, P.DRAINING, S.DRAINING),
        (P.RUNNING, S.RUNNING, False, P.STOPPING, S.STOPPING),
        (P.SICK, S.RUNNING, True, P.DRAINING, S.DRAINING),  # a sick one drains too
        (P.STALLED, S.DRAINING, True, P.STOPPING, S.STOPPING),  # finishing: no drain again
    ],
)
def test_a_stop_takes_a_replica_out_by_its_phase(
    before: Phase, stored: ReplicaState, drain: bool, phase: Phase, state: ReplicaState
) -> None:
    after = stopped(replica(before, stored), drain=drain, reason="scale down")
    assert (after.phase, after.record.state) == (phase, state)
    if phase != P.GONE:
        assert after.record.message == "scale down"
