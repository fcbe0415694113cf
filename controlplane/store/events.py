"""The append-only event log: what happened to each deployment and replica,
cut back to the last Retention.events of each deployment as it grows."""

from __future__ import annotations

import time
from collections.abc import Sequence

from controlplane.records import Event
from controlplane.store.connection import StoreBase


class Events(StoreBase):
    async def add_event(self, deployment: str, replica: str, kind: str, message: str) -> None:
        await self._run(self._add_event, deployment, replica, kind, message)

    def _add_event(self, deployment: str, replica: str, kind: str, message: str) -> None:
        with self._transaction():
            self._event(deployment, replica, kind, message)

    def _event(self, deployment: str, replica: str, kind: str, message: str) -> None:
        self._conn.execute(
            "INSERT INTO events (ts, deployment, replica, kind, message) VALUES (?, ?, ?, ?, ?)",
            (time.time(), deployment, replica, kind, message),
        )
        self._conn.execute(
            """DELETE FROM events WHERE deployment = ? AND id <= (
                   SELECT id FROM events WHERE deployment = ?
                   ORDER BY id DESC LIMIT 1 OFFSET ?)""",
            (deployment, deployment, self._retention.events),
        )

    async def events(self, deployment: str | None = None, limit: int = 100) -> list[Event]:
        """The latest `limit` events, oldest first."""
        return await self._run(self._events, deployment, limit)

    def _events(self, deployment: str | None, limit: int) -> list[Event]:
        where, args = ("WHERE deployment = ?", (deployment,)) if deployment else ("", ())
        rows = self._conn.execute(
            f"SELECT ts, deployment, replica, kind, message FROM events {where} "
            "ORDER BY id DESC LIMIT ?",
            (*args, limit),
        ).fetchall()
        return [Event(*row) for row in reversed(rows)]

    async def events_after(
        self, after_id: int, deployments: Sequence[str] | None = None, limit: int = 100
    ) -> list[Event]:
        """Up to `limit` events with an id above `after_id`, oldest first;
        with `after_id` 0, the latest `limit` ones. `deployments` (when not
        None) keeps only theirs."""
        return await self._run(self._events_after, after_id, deployments, limit)

    def _events_after(
        self, after_id: int, deployments: Sequence[str] | None, limit: int
    ) -> list[Event]:
        where, args = "WHERE id > ?", [after_id]
        if deployments is not None:
            where += f" AND deployment IN ({', '.join('?' * len(deployments))})"
            args += deployments
        order = "ASC" if after_id else "DESC"  # from a cursor on, or the latest
        rows = self._conn.execute(
            f"SELECT ts, deployment, replica, kind, message, id FROM events {where} "
            f"ORDER BY id {order} LIMIT ?",
            (*args, limit),
        ).fetchall()
        events = [Event(*row) for row in rows]
        return events if after_id else events[::-1]

    async def last_event_id(self) -> int:
        """The id of the newest event; 0 when there is none."""
        return await self._run(self._last_event_id)

    def _last_event_id(self) -> int:
        return self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]
