"""The replicas the control plane is responsible for, by id, and the one
writer of their stored records: every change is written through to the
store first, so a restarted control plane finds the same fleet."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from capstan.v1 import controlplane_pb2
from controlplane.reconciler.adoption import adopt
from controlplane.reconciler.lifecycle import Phase, Replica
from controlplane.reconciler.plan import Observed
from controlplane.records import DeploymentRecord, ReplicaRecord
from controlplane.scheduler import Placement
from controlplane.store import Store


class Fleet:
    """Every replica the control plane tracks. Values are frozen: `put` a
    changed one back, and read the current one by id after any await."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._replicas: dict[str, Replica] = {}

    async def load(self) -> list[ReplicaRecord]:
        """Reads the stored replicas; returns those forgotten (see adoption)."""
        kept, forgotten = adopt(await self._store.replicas())
        self._replicas = {replica.id: replica for replica in kept}
        for record in forgotten:
            await self._delete(record.id)
        return forgotten

    def __iter__(self) -> Iterator[Replica]:
        return iter(list(self._replicas.values()))

    def __len__(self) -> int:
        return len(self._replicas)

    def __contains__(self, replica_id: str) -> bool:
        return replica_id in self._replicas

    def get(self, replica_id: str | None) -> Replica | None:
        return self._replicas.get(replica_id) if replica_id else None

    def of(self, deployment: str) -> list[Replica]:
        return [r for r in self._replicas.values() if r.deployment == deployment]

    async def put(self, replica: Replica) -> None:
        """Adds or changes a replica (phase GONE: forgets it); its record is
        written only when it changed."""
        before = self._replicas.get(replica.id)
        if replica.phase == Phase.GONE:
            self._replicas.pop(replica.id, None)
            if before is not None:
                await self._delete(replica.id)
            return
        self._replicas[replica.id] = replica
        if before is None or before.record != replica.record:
            await self._store.put_replica(replica.record)

    async def _delete(self, replica_id: str) -> None:
        await self._store.delete_replica(replica_id)

    def observed(self) -> list[Observed]:
        """The fleet as the planner sees it."""
        return [
            Observed(
                id=r.id,
                deployment=r.deployment,
                version=r.record.version,
                code_hash=r.record.code_hash,
                state=r.record.state,
                user_config=r.record.user_config,
                max_concurrent_queries=r.record.max_concurrent_queries,
                is_healthy=r.phase != Phase.SICK,
                is_busy=r.phase == Phase.RECONFIGURING,
                is_unplaceable=r.phase == Phase.UNPLACEABLE,
                message=r.record.message,
            )
            for r in self._replicas.values()
        ]

    def placements(self, executor: str) -> list[Placement]:
        """What this executor's replicas hold, for the scheduler."""
        return [
            r.record.placement
            for r in self._replicas.values()
            if r.record.executor == executor and r.record.placement is not None
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
            replicas = sorted((r for r in self.of(name) if r.is_routable), key=lambda r: r.id)
            endpoints.append(
                controlplane_pb2.Endpoint(
                    name=name,
                    route_prefix=spec.route_prefix or "",
                    max_concurrent_queries=spec.max_concurrent_queries,
                    max_queued_requests=spec.max_queued_requests,
                    replicas=[
                        controlplane_pb2.RouteReplica(
                            id=r.id, address=r.record.address, tls=r.record.is_tls
                        )
                        for r in replicas
                    ],
                )
            )
        return endpoints
