"""How a planned start or stop moves a replica. Pure: ids and wall-clock
times are passed in.

A start places the replica: on a fit it is STARTING (a launch task takes
it), on none it stays pending and says why. A stop takes a replica out of
service at once: a pending one is forgotten, a launching one is stopped when
its launch returns, a serving one is drained (if asked) and stopped.
"""

from __future__ import annotations

from controlplane.reconciler.lifecycle import Phase, Replica
from controlplane.reconciler.plan import StartReplica
from controlplane.records import DeploymentRecord, ReplicaRecord, ReplicaState
from controlplane.scheduler import NoFit, Placement

_PENDING = (Phase.PENDING, Phase.UNPLACEABLE)


def new_replica(
    action: StartReplica, record: DeploymentRecord, replica_id: str, started_at: float
) -> Replica:
    """A PENDING replica for `action`; `started_at` is wall-clock seconds."""
    spec = record.spec
    return Replica(
        ReplicaRecord(
            id=replica_id,
            deployment=record.name,
            version=action.version,
            code_hash=action.code_hash,
            state=ReplicaState.PENDING,
            executor=spec.executor,
            user_config=spec.user_config,
            max_concurrent_queries=spec.max_concurrent_queries,
            started_at=started_at,
        ),
        Phase.PENDING,
    )


def placed(replica: Replica, placement: Placement | NoFit, started_at: float) -> Replica:
    """The replica after a placement attempt: STARTING where it fits,
    UNPLACEABLE (with the reason as its message) where it does not."""
    if isinstance(placement, NoFit):
        return replica.moved(Phase.UNPLACEABLE, message=placement.reason)
    return replica.moved(Phase.STARTING, placement=placement, message="", started_at=started_at)


def stopped(replica: Replica, *, drain: bool, reason: str) -> Replica:
    """The replica once asked to stop. Phase GONE: forget it now; STOPPING or
    DRAINING: a stop task takes it; CANCELLED: its launch task stops it."""
    if replica.phase in _PENDING:
        return replica.moved(Phase.GONE)
    if replica.phase == Phase.STARTING:
        return replica.moved(Phase.CANCELLED, message=reason)
    is_draining = drain and replica.record.state == ReplicaState.RUNNING  # SICK too
    return replica.moved(Phase.DRAINING if is_draining else Phase.STOPPING, message=reason)
