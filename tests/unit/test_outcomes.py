"""What a task's outcome means for its replica and its deployment, as
tables: a start that failed (back off, or fail the rollout), a reconfigure
the user's code rejected (replace the replica, or fail the rollout), health
checks, launches, stops and deaths."""

from __future__ import annotations

import dataclasses

import pytest

from controlplane.reconciler import outcomes as o
from controlplane.reconciler.lifecycle import Phase, Replica
from controlplane.records import DeploymentRecord, ReplicaRecord, ReplicaState
from controlplane.spec import DeploymentSpec
from executors.base import ReplicaRef

P = Phase
REF = ReplicaRef(executor="x", replica_id="r", address="127.0.0.1:9")
SPEC = DeploymentSpec(name="d", import_path="app:D", health_check_period_s=10.0)
# A first rollout (nothing stable), and one that rolled out v1.
FIRST = DeploymentRecord(name="d", spec=SPEC, version="v1", generation=1)
STABLE = dataclasses.replace(FIRST, stable_spec=SPEC, stable_version="v1")
UPDATE = dataclasses.replace(STABLE, version="v2", generation=2)
STORED = {P.STARTING: ReplicaState.STARTING, P.CANCELLED: ReplicaState.STOPPING}


def replica(phase: Phase, version: str = "v1", failures: int = 0) -> Replica:
    state = STORED.get(phase, ReplicaState.RUNNING)
    record = ReplicaRecord("r", "d", version, SPEC.code_hash(), state, "x", ref=REF)
    return Replica(record, phase, health_failures=failures)


def settle(r: Replica, outcome: o.Outcome, deployment: DeploymentRecord = STABLE) -> o.Effects:
    return o.settle(r, outcome, o.Context(deployment, now_mono_s=100.0, health_failure_threshold=3))


@pytest.mark.parametrize(
    ("deployment", "version", "is_retryable", "fails_rollout"),
    [
        (FIRST, "v1", False, True),  # a first version that cannot start: halt, no crash loop
        (FIRST, "v1", True, False),  # ... unless a retry may help: back off
        (UPDATE, "v2", False, True),  # a new version that cannot start: roll back
        (STABLE, "v1", False, False),  # the rolled-out version: back off and retry
        (STABLE, "v1", True, False),
    ],
)
def test_a_failed_start_backs_off_or_fails_the_rollout(
    deployment: DeploymentRecord, version: str, is_retryable: bool, fails_rollout: bool
) -> None:
    effects = settle(
        replica(P.STARTING, version), o.LaunchFailed(deployment, "boom", is_retryable), deployment
    )
    message = f"replica of version {version} failed to start: boom"
    assert effects.replica.phase == P.GONE
    assert effects.event == ("start_failed", message)
    assert effects.failed_rollout == ((deployment, message) if fails_rollout else None)
    assert effects.failure == (None if fails_rollout else message)


@pytest.mark.parametrize(
    ("deployment", "phase", "after", "fails_rollout"),
    [
        (STABLE, P.RECONFIGURING, P.SICK, False),  # it cannot take the rolled-out config
        (UPDATE, P.RECONFIGURING, P.RUNNING, True),  # the new config is rejected: roll back
        (STABLE, P.SICK, P.SICK, False),  # sick meanwhile: stays so
        (UPDATE, P.DRAINING, P.DRAINING, True),  # on its way out: left alone
    ],
)
def test_a_rejected_reconfigure_replaces_the_replica_or_fails_the_rollout(
    deployment: DeploymentRecord, phase: Phase, after: Phase, fails_rollout: bool
) -> None:
    effects = settle(replica(phase), o.ReconfigureRejected(deployment, "bad config"), deployment)
    message = "reconfigure of replica r failed: bad config"
    assert effects.replica.phase == after
    assert effects.event == ("reconfigure_failed", message)
    assert effects.failed_rollout == ((deployment, message) if fails_rollout else None)


@pytest.mark.parametrize(
    ("phase", "failures_before", "failure", "failures", "after", "is_reported"),
    [
        (P.RUNNING, 0, None, 0, P.RUNNING, False),
        (P.RUNNING, 2, None, 0, P.RUNNING, False),  # a pass resets the count
        (P.RUNNING, 0, "UNAVAILABLE: x", 1, P.RUNNING, False),
        (P.RUNNING, 2, "UNAVAILABLE: x", 3, P.SICK, True),  # the third in a row
        (P.RECONFIGURING, 2, "UNAVAILABLE: x", 3, P.SICK, True),
        (P.DRAINING, 2, "UNAVAILABLE: x", 3, P.DRAINING, False),  # leaving anyway
    ],
)
def test_health_checks_make_a_replica_sick_after_the_threshold(
    phase: Phase,
    failures_before: int,
    failure: str | None,
    failures: int,
    after: Phase,
    is_reported: bool,
) -> None:
    effects = settle(replica(phase, failures=failures_before), o.HealthChecked(failure))
    assert (effects.replica.phase, effects.replica.health_failures) == (after, failures)
    assert effects.replica.health_due_mono_s == 110.0  # now + the check period
    message = f"failed 3 health checks in a row: {failure}"
    assert effects.event == (("unhealthy", message) if is_reported else None)
    assert effects.failure == (f"replica r {message}" if is_reported else None)


@pytest.mark.parametrize(
    ("phase", "outcome", "after", "event", "is_changed"),
    [
        (P.STARTING, o.Launched(REF), P.RUNNING, ("started", "at 127.0.0.1:9"), True),
        (P.CANCELLED, o.Launched(REF), P.STALLED, None, True),  # stopped by the next pass
        (P.STARTING, o.Preparing("building environment"), P.STARTING, None, False),
        (P.DRAINING, o.Drained(), P.STOPPING, None, False),
        (P.STOPPING, o.Stopped(), P.GONE, ("stopped", ""), True),
        (P.STOPPING, o.StopFailed(), P.STALLED, None, False),  # retried by a later pass
        (P.RECONFIGURING, o.ReconfigureFailed(), P.RUNNING, None, False),
        (P.RECONFIGURING, o.Reconfigured("{}", 5), P.RUNNING, None, True),
        (P.RUNNING, o.Died(), P.GONE, ("died", "replica r exited unexpectedly"), True),
        (P.SICK, o.Died(), P.GONE, ("died", "replica r exited unexpectedly"), True),
    ],
)
def test_other_outcomes_move_the_replica(
    phase: Phase, outcome: o.Outcome, after: Phase, event: tuple | None, is_changed: bool
) -> None:
    effects = settle(replica(phase), outcome)
    assert (effects.replica.phase, effects.event, effects.is_changed) == (after, event, is_changed)


def test_a_launched_replica_may_be_judged_and_checked_from_now() -> None:
    running = settle(replica(P.STARTING), o.Launched(REF)).replica
    assert (running.ref_since_mono_s, running.health_due_mono_s) == (100.0, 110.0)
    assert running.record.ref == REF


@pytest.mark.parametrize(
    ("user_config", "stored"),
    [("{}", "{}"), (None, '{"old": 1}')],  # None leaves the replica's own
)
def test_a_reconfigure_records_what_the_replica_runs(user_config: str | None, stored: str) -> None:
    before = replica(P.RECONFIGURING).changed(user_config='{"old": 1}')
    after = settle(before, o.Reconfigured(user_config, 7)).replica
    assert (after.record.user_config, after.record.max_concurrent_queries) == (stored, 7)


@pytest.mark.parametrize(
    ("phase", "deployment", "now", "due"),
    [
        (P.RUNNING, STABLE, 100.0, True),
        (P.RUNNING, STABLE, 99.0, False),  # not yet
        (P.RUNNING, None, 100.0, False),  # its deployment is gone
        (P.SICK, STABLE, 100.0, False),  # no longer served: replaced instead
        (P.STARTING, STABLE, 100.0, False),
    ],
)
def test_health_check_due(
    phase: Phase, deployment: DeploymentRecord | None, now: float, due: bool
) -> None:
    r = dataclasses.replace(replica(phase), health_due_mono_s=100.0)
    assert o.health_check_due(r, deployment, now) == due


def test_no_second_health_check_while_one_is_in_flight() -> None:
    checking = dataclasses.replace(replica(P.RUNNING), health_due_mono_s=float("inf"))
    assert checking.is_checking_health
    assert not o.health_check_due(checking, STABLE, 1e12)
