"""Replica rows: which replicas exist, where they run and how to reach them,
so that a restarted control plane can recover them."""

from __future__ import annotations

from collections.abc import Callable

from controlplane.records import ReplicaRecord, ReplicaState
from controlplane.scheduler import Placement
from controlplane.store.connection import StoreBase
from executors.base import ReplicaRef

_SELECT_REPLICA = """SELECT id, deployment, version, code_hash, state, executor, user_config,
    max_concurrent_queries, ref, placement, message, started_at FROM replicas"""


class Replicas(StoreBase):
    async def put_replica(self, record: ReplicaRecord) -> None:
        await self._run(self._put_replica, record)

    def _put_replica(self, r: ReplicaRecord) -> None:
        with self._transaction():
            self._conn.execute(
                """INSERT OR REPLACE INTO replicas (id, deployment, version, code_hash, state,
                       executor, node, address, ref, placement, user_config,
                       max_concurrent_queries, message, started_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (
                    r.id,
                    r.deployment,
                    r.version,
                    r.code_hash,
                    r.state,
                    r.executor,
                    r.node,
                    r.address,
                    r.ref.to_json() if r.ref else None,
                    r.placement.to_json() if r.placement else None,
                    self._configs.reference(r.user_config),
                    r.max_concurrent_queries,
                    r.message,
                    r.started_at,
                ),
            )

    async def delete_replica(self, replica_id: str) -> None:
        await self._run(self._delete_replica, replica_id)

    def _delete_replica(self, replica_id: str) -> None:
        with self._transaction():
            self._conn.execute("DELETE FROM replicas WHERE id = ?", (replica_id,))
            self._configs.forget_unused()

    async def replicas(self, deployment: str | None = None) -> list[ReplicaRecord]:
        return await self._run(self._replicas, deployment)

    def _replicas(self, deployment: str | None) -> list[ReplicaRecord]:
        query = _SELECT_REPLICA
        if deployment is None:
            rows = self._conn.execute(query + " ORDER BY started_at, id").fetchall()
        else:
            rows = self._conn.execute(
                query + " WHERE deployment = ? ORDER BY started_at, id", (deployment,)
            ).fetchall()
        return [_replica(row, self._configs.text) for row in rows]


def _replica(row: tuple, user_config: Callable[[str | None], str | None]) -> ReplicaRecord:
    return ReplicaRecord(
        id=row[0],
        deployment=row[1],
        version=row[2],
        code_hash=row[3],
        state=ReplicaState(row[4]),
        executor=row[5],
        user_config=user_config(row[6]),
        max_concurrent_queries=row[7],
        ref=ReplicaRef.from_json(row[8]) if row[8] else None,
        placement=Placement.from_json(row[9]) if row[9] else None,
        message=row[10],
        started_at=row[11],
    )
