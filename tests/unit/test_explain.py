"""A deployment's plan before an apply, as a table: stored spec + proposal
+ replicas -> the kinds of change and the counts."""

from __future__ import annotations

import dataclasses

import pytest

from capstan.v1 import controlplane_pb2 as cp
from controlplane.reconciler.explain import Proposal, explain
from controlplane.records import DeploymentRecord, ReplicaRecord, ReplicaState
from controlplane.scheduler import Placement
from controlplane.spec import DeploymentSpec

SPEC = DeploymentSpec(name="d", import_path="m:D", num_replicas=2, user_config='{"a": 1}')
STORED = DeploymentRecord(name="d", spec=SPEC, version="v1", generation=1)


def replicas(count: int = 2) -> list[ReplicaRecord]:
    return [
        ReplicaRecord(
            id=f"r{i}", deployment="d", version="v1", code_hash=SPEC.code_hash(),
            state=ReplicaState.RUNNING, executor="local", user_config='{"a": 1}',
        )
        for i in range(count)
    ]  # fmt: skip


def changed(**fields: object) -> Proposal:
    return Proposal(dataclasses.replace(SPEC, **fields), "v1")


CASES = [
    ("nothing", STORED, Proposal(SPEC, "v1"), [], 2),
    ("create", None, Proposal(SPEC, "v1"), [cp.PLAN_CHANGE_CREATE], 0),
    ("new version", STORED, Proposal(SPEC, "v2"), [cp.PLAN_CHANGE_ROLL_OUT], 2),
    ("generated version", STORED, Proposal(SPEC, ""), [cp.PLAN_CHANGE_ROLL_OUT], 2),
    ("user_config", STORED, changed(user_config='{"a": 2}'), [cp.PLAN_CHANGE_RECONFIGURE], 2),
    ("count", STORED, changed(num_replicas=4), [cp.PLAN_CHANGE_SCALE], 2),
    (
        "router setting",
        STORED,
        changed(max_queued_requests=5),
        [cp.PLAN_CHANGE_UPDATE_SETTINGS],
        2,
    ),
    ("delete", STORED, None, [cp.PLAN_CHANGE_DELETE], 2),
]


@pytest.mark.parametrize(
    ("stored", "proposal", "changes", "before"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_changes(stored, proposal, changes, before) -> None:
    now = replicas() if stored else []
    plan = explain(stored, proposal, now, [], lambda used: Placement("n"))
    assert list(plan.changes) == changes
    assert plan.replicas_before == before and plan.fits


def test_restarts_are_counted_for_a_new_version() -> None:
    plan = explain(STORED, Proposal(SPEC, "v2"), replicas(), [], lambda used: Placement("n"))
    assert plan.restarts == 2 and plan.is_surge and plan.version_before == "v1"
    assert [(s.started, s.stopped) for s in plan.steps] == [(1, 0), (1, 1), (0, 1)]
