"""What a finished (or progressing) task means for its replica and its
deployment. Pure: `settle(replica, outcome, context)` returns the Effects the
loop records; it never touches the store, a clock or the environment.
"""

from __future__ import annotations

import dataclasses

from controlplane.reconciler.lifecycle import Phase, Replica
from controlplane.records import DeploymentRecord
from executors.base import ReplicaRef

_SERVING = (Phase.RUNNING, Phase.RECONFIGURING)


@dataclasses.dataclass(frozen=True)
class Preparing:
    """The launch is building the replica's environment ('' when done)."""

    message: str


@dataclasses.dataclass(frozen=True)
class Launched:
    ref: ReplicaRef


@dataclasses.dataclass(frozen=True)
class LaunchFailed:
    """`deployment` is the apply the replica was started for."""

    deployment: DeploymentRecord
    error: str
    is_retryable: bool


@dataclasses.dataclass(frozen=True)
class Drained:
    """The drain ended; the executor stops the replica next."""


@dataclasses.dataclass(frozen=True)
class Stopped:
    pass


@dataclasses.dataclass(frozen=True)
class StopFailed:
    """Retried on a later pass."""


@dataclasses.dataclass(frozen=True)
class Reconfigured:
    user_config: str | None
    max_concurrent_queries: int


@dataclasses.dataclass(frozen=True)
class ReconfigureFailed:
    """The call failed (not the user's code): retried on a later pass."""


@dataclasses.dataclass(frozen=True)
class ReconfigureRejected:
    """The user's reconfigure raised; `deployment` is the apply that asked."""

    deployment: DeploymentRecord
    details: str


@dataclasses.dataclass(frozen=True)
class HealthChecked:
    """`failure` is why the check failed; None when it passed."""

    failure: str | None


@dataclasses.dataclass(frozen=True)
class Died:
    """Its executor no longer runs it."""


Outcome = (
    Preparing | Launched | LaunchFailed | Drained | Stopped | StopFailed
    | Reconfigured | ReconfigureFailed | ReconfigureRejected | HealthChecked | Died
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Context:
    """What `settle` may consult: the deployment as last read (None: gone)."""

    deployment: DeploymentRecord | None
    now_mono_s: float
    health_failure_threshold: int


@dataclasses.dataclass(frozen=True)
class Effects:
    """What to record: the replica's new value (phase GONE: forget it), an
    event (kind and message), a failure that feeds the deployment's backoff,
    a failed rollout (the apply to fail and why), and whether the route
    table may have changed (publish it and run a pass)."""

    replica: Replica
    event: tuple[str, str] | None = None
    failure: str | None = None
    failed_rollout: tuple[DeploymentRecord, str] | None = None
    is_changed: bool = False


def settle(replica: Replica, outcome: Outcome, context: Context) -> Effects:
    """The effects of `outcome` on `replica`."""
    match outcome:
        case Preparing(message):
            return Effects(replica.changed(message=message))
        case Launched(ref):
            return _launched(replica, ref, context)
        case LaunchFailed():
            return _launch_failed(replica, outcome)
        case Drained():
            return Effects(replica.moved(Phase.STOPPING))
        case Stopped():
            stopped = ("stopped", replica.record.message)
            return Effects(replica.moved(Phase.GONE), stopped, is_changed=True)
        case StopFailed():
            return Effects(replica.moved(Phase.STALLED))
        case Reconfigured():
            return _reconfigured(replica, outcome)
        case ReconfigureFailed():
            return Effects(_done_reconfiguring(replica))
        case ReconfigureRejected():
            return _reconfigure_rejected(replica, outcome)
        case HealthChecked(failure):
            return _health_checked(replica, failure, context)
        case Died():
            message = f"replica {replica.id} exited unexpectedly"
            return Effects(replica.moved(Phase.GONE), ("died", message), message, is_changed=True)


def _launched(replica: Replica, ref: ReplicaRef, context: Context) -> Effects:
    if replica.phase == Phase.CANCELLED:
        # Stopped by the next pass, as any stop nothing is carrying out.
        return Effects(replica.moved(Phase.STALLED, ref=ref), is_changed=True)
    period_s = context.deployment.spec.health_check_period_s if context.deployment else 0.0
    running = dataclasses.replace(
        replica.moved(Phase.RUNNING, ref=ref, message=""),
        ref_since_mono_s=context.now_mono_s,
        health_due_mono_s=context.now_mono_s + period_s,
    )
    return Effects(running, ("started", f"at {ref.address}"), is_changed=True)


def _launch_failed(replica: Replica, outcome: LaunchFailed) -> Effects:
    """A failure for good of a version that never rolled out fails the
    rollout (no crash loop); any other backs off and is retried."""
    record = outcome.deployment
    version = replica.record.version
    message = f"replica of version {version} failed to start: {outcome.error}"
    gone = replica.moved(Phase.GONE)
    event = ("start_failed", message)
    is_stable = (
        record.stable_spec is not None
        and record.stable_version == version
        and record.stable_spec.code_hash() == replica.record.code_hash
    )
    if not outcome.is_retryable and not is_stable:
        return Effects(gone, event, failed_rollout=(record, message), is_changed=True)
    return Effects(gone, event, failure=message, is_changed=True)


def _reconfigured(replica: Replica, outcome: Reconfigured) -> Effects:
    user_config = outcome.user_config
    if user_config is None:
        user_config = replica.record.user_config
    changes = {"user_config": user_config, "max_concurrent_queries": outcome.max_concurrent_queries}
    return Effects(_done_reconfiguring(replica).changed(**changes), is_changed=True)


def _done_reconfiguring(replica: Replica) -> Replica:
    if replica.phase == Phase.RECONFIGURING:
        return replica.moved(Phase.RUNNING)
    return replica  # made SICK meanwhile, or on its way out


def _reconfigure_rejected(replica: Replica, outcome: ReconfigureRejected) -> Effects:
    """A rolled-out config that a replica cannot take: replace the replica.
    A new config the user's code rejects: fail the rollout."""
    message = f"reconfigure of replica {replica.id} failed: {outcome.details}"
    event = ("reconfigure_failed", message)
    if not outcome.deployment.is_stable:
        failed = (outcome.deployment, message)
        return Effects(_done_reconfiguring(replica), event, failed_rollout=failed)
    if replica.phase in _SERVING:
        return Effects(replica.moved(Phase.SICK, message=message), event, is_changed=True)
    return Effects(replica, event, is_changed=True)


def _health_checked(replica: Replica, failure: str | None, context: Context) -> Effects:
    period_s = context.deployment.spec.health_check_period_s if context.deployment else 0.0
    failures = 0 if failure is None else replica.health_failures + 1
    checked = dataclasses.replace(
        replica, health_failures=failures, health_due_mono_s=context.now_mono_s + period_s
    )
    if failures < context.health_failure_threshold or replica.phase not in _SERVING:
        return Effects(checked)
    message = f"failed {failures} health checks in a row: {failure}"
    sick = checked.moved(Phase.SICK, message=message)
    reason = f"replica {replica.id} {message}"
    return Effects(sick, ("unhealthy", message), failure=reason, is_changed=True)


def health_check_due(
    replica: Replica, deployment: DeploymentRecord | None, now_mono_s: float
) -> bool:
    """Whether to check the replica's health now: a serving replica of a
    known deployment whose last check is over and whose next one is due."""
    is_due = now_mono_s >= replica.health_due_mono_s
    return deployment is not None and replica.is_routable and is_due
