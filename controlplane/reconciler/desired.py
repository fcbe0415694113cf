"""What each stored deployment should look like on this pass. Pure."""

from __future__ import annotations

from controlplane.reconciler.backoff import Backoff
from controlplane.reconciler.plan import Desired
from controlplane.records import DeploymentRecord


def desire(
    record: DeploymentRecord,
    *,
    autoscaled: int | None,
    backoff: Backoff | None,
    has_failed_start: bool,
    now_mono_s: float,
) -> Desired:
    """The Desired state of `record`: no replicas while it is deleted or
    halted; the autoscaler's count (`autoscaled`) or the spec's otherwise.
    Nothing new starts while start failures back off, nor after its start
    failed for good (until the store, told of it, says what comes next)."""
    spec = record.spec
    is_waiting = backoff is not None and backoff.is_waiting(now_mono_s)
    if record.is_deleting or record.is_halted:
        target = 0
    else:
        target = spec.target_replicas if autoscaled is None else autoscaled
    return Desired(
        name=record.name,
        version=record.version,
        code_hash=record.code_hash,
        target=target,
        user_config=spec.user_config,
        max_concurrent_queries=spec.max_concurrent_queries,
        may_start=not is_waiting and not has_failed_start,
    )
