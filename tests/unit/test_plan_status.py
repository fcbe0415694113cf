"""Backoff and status (what it is, what of it to store, when a deleted
deployment goes), the pure helpers around the planner, as tables."""

from __future__ import annotations

import dataclasses

import pytest

from controlplane.reconciler.backoff import Backoff, BackoffPolicy, after_failure
from controlplane.reconciler.plan import Desired, Observed
from controlplane.reconciler.status import StatusWrite, assess, removable, status, status_write
from controlplane.records import DeploymentRecord, DeploymentState, ReplicaState
from controlplane.spec import DeploymentSpec

POLICY = BackoffPolicy(base_s=1.0, max_s=8.0, reset_s=100.0)


@pytest.mark.parametrize(
    ("failures_at", "failures", "retry_in"),
    [
        ([0.0], 1, 1.0),
        ([0.0, 1.0], 2, 2.0),
        ([0.0, 1.0, 3.0], 3, 4.0),
        ([0.0, 1.0, 3.0, 7.0, 15.0, 23.0], 6, 8.0),  # capped
        ([0.0, 1.0, 500.0], 1, 1.0),  # long quiet: counted from scratch
    ],
)
def test_backoff_grows_caps_and_resets(failures_at: list[float], failures: int, retry_in: float):
    backoff: Backoff | None = None
    for now in failures_at:
        backoff = after_failure(backoff, now, "boom", POLICY)
    assert backoff is not None
    assert backoff.failures == failures
    assert backoff.retry_mono_s - failures_at[-1] == retry_in
    assert backoff.is_waiting(failures_at[-1]) and not backoff.is_waiting(backoff.retry_mono_s)


def want(target: int = 2, **kw: object) -> Desired:
    return Desired(**({"name": "d", "version": "v1", "code_hash": "h", "target": target} | kw))  # type: ignore[arg-type]


def rep(id: str, state: ReplicaState = ReplicaState.RUNNING, **kw: object) -> Observed:
    fields = {"id": id, "deployment": "d", "version": "v1", "code_hash": "h", "state": state}
    return Observed(**(fields | kw))  # type: ignore[arg-type]


U, H, X = DeploymentState.UPDATING, DeploymentState.HEALTHY, DeploymentState.UNHEALTHY
CASES = [
    ("all running", want(), [rep("a"), rep("b")], False, None, H, ""),
    ("zero wanted, none left", want(0), [], False, None, H, ""),
    ("still starting", want(), [rep("a"), rep("b", ReplicaState.STARTING)], False, None, U,
     "1/2 replicas of version v1 running"),
    ("old one still draining", want(), [rep("a"), rep("b"), rep("c", ReplicaState.DRAINING)],
     False, None, U, "2/2 replicas"),
    ("config not applied yet", want(1, user_config="2"), [rep("a", user_config="1")], False,
     None, U, "0/1"),
    ("stable but short", want(), [rep("a")], True, None, X, "1/2"),
    ("pending says why", want(), [rep("a"), rep("p", ReplicaState.PENDING,
     message="needs 1 CPU, local has 0 free")], False, None, U,
     "replica p pending: needs 1 CPU, local has 0 free"),
    ("sick replica", want(), [rep("a"), rep("b", is_healthy=False)], False, None, X,
     "replica b failed its health checks"),
    ("backing off", want(), [rep("a")], False, Backoff(2, 10.0, 14.0, "replica x died"), X,
     "replica x died; retrying in 4 s (failure 2)"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("desired", "replicas", "is_stable", "backoff", "state", "message"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_assess(
    desired: Desired,
    replicas: list[Observed],
    is_stable: bool,
    backoff: Backoff | None,
    state: DeploymentState,
    message: str,
) -> None:
    got_state, got_message = assess(
        desired, replicas, is_stable=is_stable, backoff=backoff, now_mono_s=10.0
    )
    assert got_state == state
    assert message in got_message if message else got_message == ""


@pytest.mark.parametrize(("is_scaling_up", "state"), [(False, X), (True, U)])
def test_autoscaler_scale_up_shortfall_is_updating(
    is_scaling_up: bool, state: DeploymentState
) -> None:
    got_state, got_message = assess(
        want(3), [rep("a"), rep("b", ReplicaState.STARTING)], is_stable=True, backoff=None,
        now_mono_s=10.0, is_scaling_up=is_scaling_up,
    )  # fmt: skip
    assert (got_state, got_message) == (state, "1/3 replicas of version v1 running")


SPEC = DeploymentSpec(name="d", import_path="app:D")
NEW = DeploymentRecord(name="d", spec=SPEC, version="v1", generation=1)
ROLLED_OUT = dataclasses.replace(NEW, stable_spec=SPEC, stable_version="v1", state=H)
F, D = DeploymentState.DEPLOY_FAILED, DeploymentState.DELETING


@pytest.mark.parametrize(
    ("record", "state", "message", "write"),
    [
        (NEW, H, "", StatusWrite(H, "", is_stable=True, is_rollout_done=True)),
        (ROLLED_OUT, H, "", None),  # already so
        (dataclasses.replace(ROLLED_OUT, state=X), H, "", StatusWrite(H, "", is_stable=True)),
        (NEW, U, "1/2", StatusWrite(U, "1/2")),
        (dataclasses.replace(NEW, message="1/2"), U, "1/2", None),  # unchanged
        (ROLLED_OUT, X, "1/2", StatusWrite(X, "1/2")),
    ],
)
def test_status_write(
    record: DeploymentRecord, state: DeploymentState, message: str, write: StatusWrite | None
) -> None:
    assert status_write(record, state, message) == write


@pytest.mark.parametrize(
    ("record", "assessed"),
    [
        (
            dataclasses.replace(NEW, is_deleting=True),
            (DeploymentState.DELETING, "stopping 1 replicas"),
        ),
        (dataclasses.replace(NEW, state=F, message="boom"), None),  # keeps its reason
        (NEW, (U, "0/2 replicas of version v1 running")),
    ],
)
def test_status(record: DeploymentRecord, assessed: tuple | None) -> None:
    replicas = [rep("a", ReplicaState.STARTING)]
    got = status(want(), record, replicas, backoff=None, now_mono_s=0.0, is_scaling_up=False)
    assert got == assessed


@pytest.mark.parametrize(
    ("is_deleting", "with_replicas", "removed"),
    [(True, set(), True), (True, {"d"}, False), (False, set(), False)],
)
def test_a_deleted_deployment_goes_with_its_last_replica(
    is_deleting: bool, with_replicas: set[str], removed: bool
) -> None:
    record = dataclasses.replace(NEW, is_deleting=is_deleting)
    assert removable([record], with_replicas) == ([record] if removed else [])
