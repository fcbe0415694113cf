"""A deployment's state and message from what is running. Pure."""

from __future__ import annotations

from collections.abc import Sequence

from controlplane.reconciler.backoff import Backoff
from controlplane.reconciler.plan import Desired, Observed, is_configured, is_current
from controlplane.records import DeploymentState, ReplicaState

# Status stays short: a few pending reasons say enough.
_MAX_PENDING_REASONS = 3


def assess(
    want: Desired,
    replicas: Sequence[Observed],
    *,
    is_stable: bool,
    backoff: Backoff | None,
    now: float,
    is_scaling_up: bool = False,
) -> tuple[DeploymentState, str]:
    """HEALTHY once exactly `target` replicas of the desired version run with
    the desired config and nothing else is left; otherwise UPDATING, or
    UNHEALTHY when a rolled-out deployment lost replicas or is backing off.
    A shortfall while the autoscaler scales up is UPDATING, not UNHEALTHY."""
    ready = [r for r in replicas if _is_ready(r, want)]
    if len(ready) == want.target and len(replicas) == len(ready):
        return DeploymentState.HEALTHY, ""
    is_backing_off = backoff is not None and backoff.is_waiting(now)
    sick = [r for r in replicas if not r.is_healthy]
    parts = [f"{len(ready)}/{want.target} replicas of version {want.version} running"]
    if is_backing_off:
        assert backoff is not None
        wait_s = backoff.retry_at - now
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
