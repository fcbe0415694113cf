"""A deployment's state and message from what is running, and what to write
of it. Pure."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Sequence

from controlplane.reconciler.backoff import Backoff
from controlplane.reconciler.plan import Desired, Observed, is_configured, is_current
from controlplane.records import DeploymentRecord, DeploymentState, ReplicaState

# Status stays short: a few pending reasons say enough.
_MAX_PENDING_REASONS = 3


def assess(
    want: Desired,
    replicas: Sequence[Observed],
    *,
    is_stable: bool,
    backoff: Backoff | None,
    now_mono_s: float,
    is_scaling_up: bool = False,
) -> tuple[DeploymentState, str]:
    """HEALTHY once exactly `target` replicas of the desired version run with
    the desired config and nothing else is left; otherwise UPDATING, or
    UNHEALTHY when a rolled-out deployment lost replicas or is backing off.
    A shortfall while the autoscaler scales up is UPDATING, not UNHEALTHY."""
    ready = [r for r in replicas if _is_ready(r, want)]
    if len(ready) == want.target and len(replicas) == len(ready):
        return DeploymentState.HEALTHY, ""
    is_backing_off = backoff is not None and backoff.is_waiting(now_mono_s)
    sick = [r for r in replicas if not r.is_healthy]
    parts = [f"{len(ready)}/{want.target} replicas of version {want.version} running"]
    if is_backing_off:
        assert backoff is not None
        wait_s = backoff.retry_mono_s - now_mono_s
        parts.append(f"{backoff.reason}; retrying in {wait_s:.0f} s (failure {backoff.failures})")
    parts += [f"replica {r.id} failed its health checks" for r in sick]
    pending = [r for r in replicas if r.state == ReplicaState.PENDING and r.message]
    parts += [f"replica {r.id} pending: {r.message}" for r in pending[:_MAX_PENDING_REASONS]]
    is_short = is_stable and not is_scaling_up and len(ready) < want.target
    state = (
        DeploymentState.UNHEALTHY
        if is_backing_off or sick or is_short
        else DeploymentState.UPDATING
    )
    return state, "; ".join(parts)


def _is_ready(replica: Observed, want: Desired) -> bool:
    return (
        replica.state == ReplicaState.RUNNING
        and replica.is_healthy
        and is_current(replica, want)
        and is_configured(replica, want)
    )


@dataclasses.dataclass(frozen=True)
class StatusWrite:
    """A change of a deployment's stored status. `is_stable` marks the spec
    in force as rolled out (a later failure falls back to it);
    `is_rollout_done` says a new version got there."""

    state: DeploymentState
    message: str
    is_stable: bool = False
    is_rollout_done: bool = False


def status_write(
    record: DeploymentRecord, state: DeploymentState, message: str
) -> StatusWrite | None:
    """What to store now that `record` was assessed as (state, message):
    nothing when that is what is stored; HEALTHY also marks it stable."""
    if state == DeploymentState.HEALTHY:
        if record.is_stable and record.state == state:
            return None
        # A stable one comes back to HEALTHY after a scale or a loss.
        return StatusWrite(state, "", is_stable=True, is_rollout_done=not record.is_stable)
    if (state, message) == (record.state, record.message):
        return None
    return StatusWrite(state, message)


def status(
    want: Desired,
    record: DeploymentRecord,
    replicas: Sequence[Observed],
    *,
    backoff: Backoff | None,
    now_mono_s: float,
    is_scaling_up: bool,
) -> tuple[DeploymentState, str] | None:
    """(state, message) of a deployment on this pass: DELETING while it is
    deleted; None (stays as stored, with its reason) once its apply failed."""
    if record.is_deleting:
        return DeploymentState.DELETING, f"stopping {len(replicas)} replicas"
    if record.state == DeploymentState.DEPLOY_FAILED:
        return None  # until the next apply
    return assess(
        want, replicas, is_stable=record.is_stable, backoff=backoff,
        now_mono_s=now_mono_s, is_scaling_up=is_scaling_up,
    )  # fmt: skip


def removable(
    records: Iterable[DeploymentRecord], with_replicas: Collection[str]
) -> list[DeploymentRecord]:
    """Deployments being deleted whose last replica is gone."""
    return [r for r in records if r.is_deleting and r.name not in with_replicas]
