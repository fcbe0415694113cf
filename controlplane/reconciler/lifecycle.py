"""A replica's lifecycle while this control plane runs: one phase, moved only
along the transitions in `TRANSITIONS`. Pure.

The stored ReplicaState says where a replica is for a restarted control
plane; a Phase also says who owns it now (a launch, reconfigure or stop task,
or nobody), which only matters while this process runs. Several phases share
one stored state (RECONFIGURING and SICK are stored RUNNING).
"""

from __future__ import annotations

import dataclasses
import enum
import math

from controlplane.records import ReplicaRecord, ReplicaState


class Phase(enum.Enum):
    PENDING = "pending"  # waiting to be placed
    UNPLACEABLE = "unplaceable"  # pending: no node had room at the last try
    STARTING = "starting"  # a launch task owns it
    CANCELLED = "cancelled"  # asked to stop while launching: stopped once the launch returns
    RUNNING = "running"  # serving
    RECONFIGURING = "reconfiguring"  # serving; a Reconfigure is in flight
    SICK = "sick"  # failed its health checks or a reconfigure: to be replaced
    DRAINING = "draining"  # a stop task drains it
    STOPPING = "stopping"  # a stop task stops it
    STALLED = "stalled"  # draining or stopping with no task: a failed or inherited stop
    GONE = "gone"  # stopped, died or failed to start: forgotten


TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.PENDING: frozenset({Phase.UNPLACEABLE, Phase.STARTING, Phase.GONE}),
    Phase.UNPLACEABLE: frozenset({Phase.UNPLACEABLE, Phase.STARTING, Phase.GONE}),
    Phase.STARTING: frozenset({Phase.RUNNING, Phase.CANCELLED, Phase.GONE}),
    Phase.CANCELLED: frozenset({Phase.STALLED, Phase.GONE}),
    Phase.RUNNING: frozenset(
        {Phase.RECONFIGURING, Phase.SICK, Phase.DRAINING, Phase.STOPPING, Phase.GONE}
    ),
    Phase.RECONFIGURING: frozenset({Phase.RUNNING, Phase.SICK, Phase.GONE}),
    Phase.SICK: frozenset({Phase.DRAINING, Phase.STOPPING, Phase.GONE}),
    Phase.DRAINING: frozenset({Phase.STOPPING, Phase.STALLED}),
    Phase.STOPPING: frozenset({Phase.STALLED, Phase.GONE}),
    Phase.STALLED: frozenset({Phase.STOPPING}),
    Phase.GONE: frozenset(),
}

# What each phase is stored as. STALLED keeps the state it was stored with.
_STORED = {
    Phase.PENDING: ReplicaState.PENDING,
    Phase.UNPLACEABLE: ReplicaState.PENDING,
    Phase.STARTING: ReplicaState.STARTING,
    Phase.CANCELLED: ReplicaState.STOPPING,
    Phase.RUNNING: ReplicaState.RUNNING,
    Phase.RECONFIGURING: ReplicaState.RUNNING,
    Phase.SICK: ReplicaState.RUNNING,
    Phase.DRAINING: ReplicaState.DRAINING,
    Phase.STOPPING: ReplicaState.STOPPING,
}
# A stored replica read back after a restart: nothing owns it yet.
_ADOPTED = {
    ReplicaState.PENDING: Phase.PENDING,
    ReplicaState.RUNNING: Phase.RUNNING,
    ReplicaState.DRAINING: Phase.STALLED,
    ReplicaState.STOPPING: Phase.STALLED,
}
_ROUTABLE = (Phase.RUNNING, Phase.RECONFIGURING)


class IllegalTransition(RuntimeError):
    """A bug: code tried to move a replica along a transition not in the table."""


@dataclasses.dataclass(frozen=True)
class Replica:
    """One replica: its record and its phase. Times are monotonic seconds.
    `health_due_mono_s` is infinite while a health check is in flight;
    `ref_since_mono_s` is when its ref was stored: only an observation that
    began after it may declare the replica dead."""

    record: ReplicaRecord
    phase: Phase
    health_failures: int = 0
    health_due_mono_s: float = 0.0
    ref_since_mono_s: float = 0.0

    @classmethod
    def adopted(cls, record: ReplicaRecord) -> Replica:
        """A replica read from the store (never one stored STARTING)."""
        return cls(record, _ADOPTED[record.state])

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def deployment(self) -> str:
        return self.record.deployment

    @property
    def is_routable(self) -> bool:
        return self.phase in _ROUTABLE and self.record.ref is not None

    @property
    def is_checking_health(self) -> bool:
        return math.isinf(self.health_due_mono_s)

    def moved(self, to: Phase, **changes: object) -> Replica:
        """This replica in phase `to`, its record changed by `changes`.
        Raises IllegalTransition when the table has no such transition."""
        if to not in TRANSITIONS[self.phase]:
            raise IllegalTransition(f"replica {self.id} cannot go from {self.phase} to {to}")
        state = _STORED.get(to, self.record.state)
        return dataclasses.replace(self.changed(state=state, **changes), phase=to)

    def changed(self, **changes: object) -> Replica:
        """This replica, same phase, its record changed by `changes`."""
        record = dataclasses.replace(self.record, **changes)  # type: ignore[arg-type]
        return dataclasses.replace(self, record=record)
