"""The replicas the control plane is responsible for: their stored records
plus what only matters while this process runs (health-check counts, tasks
in flight). Every state change is written through to the store first, so a
restarted control plane finds the same fleet."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping

from capstan.v1 import controlplane_pb2
from controlplane.reconciler.plan import Observed
from controlplane.records import DeploymentRecord, ReplicaRecord, ReplicaState
from controlplane.scheduler import Placement
from controlplane.store import Store


@dataclasses.dataclass
class TrackedReplica:
    """One replica: its record and its in-memory bookkeeping."""

    record: ReplicaRecord
    # Consecutive failed health checks, and when the next one is due.
    health_failures: int = 0
    health_due: float = 0.0
    is_checking: bool = False
    # A Reconfigure is in flight.
    is_busy: bool = False
    # A launch or stop task owns this replica now.
    has_task: bool = False
    # Asked to stop while its launch was in flight: stop it when it returns.
    is_doomed: bool = False
    is_unplaceable: bool = False
    # Monotonic time the ref was stored: only observations that began after
    # it may declare the replica dead.
    ref_since: float = 0.0
    # Failed its health checks (or its reconfigure): to be replaced.
    is_sick: bool = False

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def state(self) -> ReplicaState:
        return self.record.state

    @property
    def is_routable(self) -> bool:
        return self.state == ReplicaState.RUNNING and not self.is_sick and bool(self.record.ref)


class Fleet:
    """Every replica the control plane tracks, by id."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._replicas: dict[str, TrackedReplica] = {}

    async def load(self) -> list[ReplicaRecord]:
        """Reads the stored replicas. A replica whose launch was in flight when
        the previous control plane stopped has no stored address: it is
        forgotten, and stopped when an executor reports it as unknown.
        Returns the forgotten records."""
        forgotten = []
        for record in await self._store.replicas():
            if record.state == ReplicaState.STARTING:
                await self._store.delete_replica(record.id)
                forgotten.append(record)
            else:
                self._replicas[record.id] = TrackedReplica(record)
        return forgotten

    def __iter__(self) -> Iterator[TrackedReplica]:
        return iter(list(self._replicas.values()))

    def __len__(self) -> int:
        return len(self._replicas)

    def __contains__(self, replica_id: str) -> bool:
        return replica_id in self._replicas

    def get(self, replica_id: str) -> TrackedReplica | None:
        return self._replicas.get(replica_id)

    def of(self, deployment: str) -> list[TrackedReplica]:
        return [r for r in self._replicas.values() if r.record.deployment == deployment]

    async def add(self, record: ReplicaRecord) -> TrackedReplica:
        tracked = self._replicas[record.id] = TrackedReplica(record)
        await self._store.put_replica(record)
        return tracked

    async def update(self, tracked: TrackedReplica, **changes: object) -> None:
        """Changes a replica's record, in memory and in the store."""
        tracked.record = dataclasses.replace(tracked.record, **changes)  # type: ignore[arg-type]
        if tracked.id in self._replicas:
            await self._store.put_replica(tracked.record)

    async def remove(self, tracked: TrackedReplica) -> None:
        self._replicas.pop(tracked.id, None)
        await self._store.delete_replica(tracked.id)

    def observed(self) -> list[Observed]:
        """The fleet as the planner sees it."""
        return [
            Observed(
                id=t.id,
                deployment=t.record.deployment,
                version=t.record.version,
                code_hash=t.record.code_hash,
                state=t.state,
                user_config=t.record.user_config,
                max_concurrent_queries=t.record.max_concurrent_queries,
                is_healthy=not t.is_sick,
                is_busy=t.is_busy or (t.has_task and t.state == ReplicaState.PENDING),
                is_unplaceable=t.is_unplaceable,
                message=t.record.message,
            )
            for t in self._replicas.values()
        ]

    def placements(self, executor: str) -> list[Placement]:
        """What this executor's replicas hold, for the scheduler."""
        return [
            t.record.placement
            for t in self._replicas.values()
            if t.record.executor == executor and t.record.placement is not None
        ]

    def endpoints(
        self, deployments: Mapping[str, DeploymentRecord]
    ) -> list[controlplane_pb2.Endpoint]:
        """The route table: every deployment not being deleted, with its
        routable replicas (possibly none, so routers can answer 503, not 404)."""
        endpoints = []
        for name, record in deployments.items():
            if record.is_deleting:
                continue
            spec = record.spec
            replicas = sorted((t for t in self.of(name) if t.is_routable), key=lambda t: t.id)
            endpoints.append(
                controlplane_pb2.Endpoint(
                    name=name,
                    route_prefix=spec.route_prefix or "",
                    max_concurrent_queries=spec.max_concurrent_queries,
                    max_queued_requests=spec.max_queued_requests,
                    replicas=[
                        controlplane_pb2.RouteReplica(id=t.id, address=t.record.address)
                        for t in replicas
                    ],
                )
            )
        return endpoints
