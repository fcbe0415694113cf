"""The store's one connection, on one thread, and its transactions.

Every call runs on the store's own thread, off the event loop, so there is
exactly one writer and no locking beyond SQLite's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import pathlib
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Self, TypeVar

from controlplane.parsed_specs import ParsedSpecs
from controlplane.replica_configs import ReplicaConfigs
from controlplane.store.schema import connect

_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True)
class Retention:
    """How much history the store keeps: the last `versions` applies of each
    deployment and its last `events` events. A deployment that is removed
    takes its history and events with it, so the database stays small."""

    versions: int
    events: int


class StoreBase:
    """The connection, its thread and transactions that each table's part of
    the store builds on."""

    def __init__(
        self, pool: ThreadPoolExecutor, conn: sqlite3.Connection, retention: Retention
    ) -> None:
        self._pool = pool
        self._conn = conn
        self._retention = retention
        self._specs = ParsedSpecs()  # touched on the store's thread only
        self._configs = ReplicaConfigs(conn)

    @classmethod
    async def open(cls, path: pathlib.Path, retention: Retention) -> Self:
        """Opens (creating if needed) the database at `path`."""
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="capstan-store")
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(pool, connect, path)
        except BaseException:
            pool.shutdown(wait=False)
            raise
        return cls(pool, conn, retention)

    async def close(self) -> None:
        await self._run(self._conn.close)
        self._pool.shutdown(wait=True)

    async def _run(self, fn: Callable[..., _T], *args: object) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        if self._conn.in_transaction:  # nested: the outer one commits
            yield
            return
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")
