"""SQLite store: deployments with their version history, replicas with where
they run, and an append-only event log. After a crash the store is the truth.

One connection on one thread: every call runs there, off the event loop, so
there is exactly one writer and no locking beyond SQLite's own. Each apply is
one transaction (prev_version check, route check, write, history, event).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import pathlib
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from capstan.errors import AlreadyExists, NotFound, VersionConflict
from capstan.v1 import deployment_pb2
from controlplane.application import ApplicationRecord, ApplicationSpec
from controlplane.parsed_specs import ParsedSpecs
from controlplane.records import (
    DeploymentRecord,
    DeploymentState,
    Event,
    ReplicaRecord,
    ReplicaState,
    VersionRecord,
)
from controlplane.replica_configs import SCHEMA as _CONFIGS_SCHEMA
from controlplane.replica_configs import ReplicaConfigs
from controlplane.scheduler import Placement
from controlplane.spec import DeploymentSpec
from executors.base import ReplicaRef

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE deployments (
    name TEXT PRIMARY KEY,
    spec BLOB NOT NULL,
    version TEXT NOT NULL,
    code_hash TEXT NOT NULL,
    route_prefix TEXT,
    generation INTEGER NOT NULL,
    state INTEGER NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    stable_spec BLOB,
    stable_version TEXT,
    is_halted INTEGER NOT NULL DEFAULT 0,
    is_deleting INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE deployment_versions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    generation INTEGER NOT NULL,
    spec BLOB NOT NULL,
    applied_at REAL NOT NULL
);
CREATE INDEX deployment_versions_by_name ON deployment_versions (name, id);
CREATE TABLE replicas (
    id TEXT PRIMARY KEY,
    deployment TEXT NOT NULL,
    version TEXT NOT NULL,
    code_hash TEXT NOT NULL,
    state INTEGER NOT NULL,
    executor TEXT NOT NULL,
    node TEXT NOT NULL DEFAULT '',
    address TEXT NOT NULL DEFAULT '',
    ref TEXT,
    placement TEXT,
    user_config TEXT,
    max_concurrent_queries INTEGER NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    started_at REAL NOT NULL
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    deployment TEXT NOT NULL,
    replica TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX events_by_deployment ON events (deployment, id);
"""
# Tables added after schema 1 shipped: created where missing, so an older
# state.db opens unchanged.
_ADDITIONS = """
CREATE TABLE IF NOT EXISTS applications (
    name TEXT PRIMARY KEY,
    route_prefix TEXT,
    ingress TEXT NOT NULL,
    deployments TEXT NOT NULL,
    generation INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS application_sources (
    name TEXT PRIMARY KEY,
    source TEXT NOT NULL
);
"""

_T = TypeVar("_T")
_WAL_LIMIT_BYTES = 16 << 20


@dataclasses.dataclass(frozen=True)
class Retention:
    """How much history the store keeps: the last `versions` applies of each
    deployment and its last `events` events. A deployment that is removed
    takes its history and events with it, so the database stays small."""

    versions: int
    events: int


class Store:
    """The control plane's durable state. Open with `await Store.open(path)`."""

    def __init__(
        self, pool: ThreadPoolExecutor, conn: sqlite3.Connection, retention: Retention
    ) -> None:
        self._pool = pool
        self._conn = conn
        self._retention = retention
        self._specs = ParsedSpecs()  # touched on the store's thread only
        self._configs = ReplicaConfigs(conn)

    @classmethod
    async def open(cls, path: pathlib.Path, retention: Retention) -> Store:
        """Opens (creating if needed) the database at `path`."""
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="capstan-store")
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(pool, _connect, path)
        except BaseException:
            pool.shutdown(wait=False)
            raise
        return cls(pool, conn, retention)

    async def close(self) -> None:
        await self._run(self._conn.close)
        self._pool.shutdown(wait=True)

    async def _run(self, fn: Callable[..., _T], *args: object) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # -- deployments ---------------------------------------------------------

    async def apply(self, spec: DeploymentSpec, version: str) -> DeploymentRecord:
        """Makes `spec` the deployment's desired state, in one transaction.

        Raises VersionConflict when spec.prev_version is set and differs from
        the version in force, AlreadyExists when another deployment holds the
        route prefix. Either way nothing changes."""
        return await self._run(self._apply, spec, version)

    def _apply(self, spec: DeploymentSpec, version: str) -> DeploymentRecord:
        now = time.time()
        with self._transaction():
            row = self._conn.execute(
                "SELECT version, generation, created_at FROM deployments WHERE name = ?",
                (spec.id,),
            ).fetchone()
            _check_prev_version(spec, row[0] if row else None)
            self._check_route_free(spec)
            generation = row[1] + 1 if row else 1
            created_at = row[2] if row else now
            self._conn.execute(
                """INSERT INTO deployments (name, spec, version, code_hash, route_prefix,
                       generation, state, message, created_at, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, '', ?, ?)
                   ON CONFLICT (name) DO UPDATE SET
                       spec = excluded.spec, version = excluded.version,
                       code_hash = excluded.code_hash, route_prefix = excluded.route_prefix,
                       generation = excluded.generation, state = excluded.state,
                       message = '', is_halted = 0, is_deleting = 0,
                       updated_at = excluded.updated_at""",
                (
                    spec.id,
                    _spec_bytes(spec),
                    version,
                    spec.code_hash(),
                    spec.route_prefix,
                    generation,
                    DeploymentState.UPDATING,
                    created_at,
                    now,
                ),
            )
            self._conn.execute(
                """INSERT INTO deployment_versions (name, version, generation, spec, applied_at)
                   VALUES (?, ?, ?, ?, ?)""",
                (spec.id, version, generation, _spec_bytes(spec), now),
            )
            self._conn.execute(
                """DELETE FROM deployment_versions WHERE name = ? AND id <= (
                       SELECT id FROM deployment_versions WHERE name = ?
                       ORDER BY id DESC LIMIT 1 OFFSET ?)""",
                (spec.id, spec.id, self._retention.versions),
            )
            self._event(spec.id, "", "applied", f"version {version} (apply #{generation})")
            return self._get(spec.id)  # type: ignore[return-value]

    def _check_route_free(self, spec: DeploymentSpec) -> None:
        if spec.route_prefix is None:
            return
        holder = self._conn.execute(
            """SELECT name FROM deployments
               WHERE route_prefix = ? AND name != ? AND is_deleting = 0""",
            (spec.route_prefix, spec.id),
        ).fetchone()
        if holder:
            raise AlreadyExists(
                f'route_prefix "{spec.route_prefix}" is already used by deployment '
                f'"{holder[0]}"; pick another prefix or delete "{holder[0]}" first'
            )

    async def get(self, name: str) -> DeploymentRecord | None:
        return await self._run(self._get, name)

    def _get(self, name: str) -> DeploymentRecord | None:
        row = self._conn.execute(_SELECT_DEPLOYMENT + " WHERE name = ?", (name,)).fetchone()
        return _deployment(row, self._specs.load) if row else None

    async def deployments(self) -> list[DeploymentRecord]:
        return await self._run(self._deployments)

    def _deployments(self) -> list[DeploymentRecord]:
        rows = self._conn.execute(_SELECT_DEPLOYMENT + " ORDER BY name").fetchall()
        self._specs.sweep()
        return [_deployment(row, self._specs.load) for row in rows]

    async def mark_deleting(self, name: str) -> DeploymentRecord:
        """Starts deleting a deployment; its route goes at once. NotFound if unknown."""
        return await self._run(self._mark_deleting, name)

    def _mark_deleting(self, name: str) -> DeploymentRecord:
        with self._transaction():
            if self._get(name) is None:
                raise NotFound(f'deployment "{name}" not found')
            self._update(name, is_deleting=1, state=DeploymentState.DELETING, message="")
            self._event(name, "", "deleting", "delete requested")
            return self._get(name)  # type: ignore[return-value]

    async def remove(self, name: str, generation: int) -> None:
        """Forgets a deleted deployment, with its history and events (unless
        apply #generation was followed by a new apply meanwhile)."""
        await self._run(self._remove, name, generation)

    def _remove(self, name: str, generation: int) -> None:
        with self._transaction():
            removed = self._conn.execute(
                "DELETE FROM deployments WHERE name = ? AND generation = ? AND is_deleting = 1",
                (name, generation),
            ).rowcount
            if removed:
                self._forget_history(name)

    def _forget_history(self, name: str) -> None:
        self._conn.execute("DELETE FROM deployment_versions WHERE name = ?", (name,))
        self._conn.execute("DELETE FROM events WHERE deployment = ?", (name,))

    # The reconciler computes status from what it read at the start of a pass;
    # these writes only land if no apply or failure came in between.
    _UNCHANGED = "name = ? AND generation = ? AND state != ?"

    async def set_status(
        self, name: str, generation: int, state: DeploymentState, message: str
    ) -> None:
        """Sets the status of apply #generation, unless it failed meanwhile."""
        await self._run(self._set_status, name, generation, state, message)

    def _set_status(self, name: str, generation: int, state: DeploymentState, message: str) -> None:
        with self._transaction():
            self._conn.execute(
                f"UPDATE deployments SET state = ?, message = ?, updated_at = ? "
                f"WHERE {self._UNCHANGED}",
                (state, message, time.time(), name, generation, DeploymentState.DEPLOY_FAILED),
            )

    async def mark_stable(self, name: str, generation: int) -> None:
        """Records that apply #generation finished rolling out (unless it
        failed meanwhile): a later failure falls back to it."""
        await self._run(self._mark_stable, name, generation)

    def _mark_stable(self, name: str, generation: int) -> None:
        with self._transaction():
            self._conn.execute(
                f"""UPDATE deployments SET stable_spec = spec, stable_version = version,
                       state = ?, message = '', updated_at = ?
                   WHERE {self._UNCHANGED} AND is_halted = 0 AND is_deleting = 0""",
                (
                    DeploymentState.HEALTHY,
                    time.time(),
                    name,
                    generation,
                    DeploymentState.DEPLOY_FAILED,
                ),
            )

    async def fail(self, name: str, generation: int, message: str) -> DeploymentRecord | None:
        """Fails apply #generation: back to the stable spec if there is one,
        else halted (no replicas). Returns None if a later apply superseded it."""
        return await self._run(self._fail, name, generation, message)

    def _fail(self, name: str, generation: int, message: str) -> DeploymentRecord | None:
        with self._transaction():
            record = self._get(name)
            if record is None or record.generation != generation:
                return None  # a later apply replaced the one that failed
            if record.state == DeploymentState.DEPLOY_FAILED:
                return None  # already failed (a second replica's failure)
            if record.stable_spec is not None and not record.is_stable:
                # Back to what last rolled out; its replicas may still be serving.
                self._conn.execute(
                    """UPDATE deployments SET spec = stable_spec, version = stable_version,
                           code_hash = ?, route_prefix = ? WHERE name = ?""",
                    (record.stable_spec.code_hash(), record.stable_spec.route_prefix, name),
                )
                message += f"; rolled back to version {record.stable_version}"
            else:
                self._update(name, is_halted=1)
            self._update(name, state=DeploymentState.DEPLOY_FAILED, message=message)
            self._event(name, "", "deploy_failed", message)
            return self._get(name)

    def _update(self, name: str, **columns: object) -> None:
        assignments = ", ".join(f"{column} = ?" for column in columns)
        self._conn.execute(
            f"UPDATE deployments SET {assignments}, updated_at = ? WHERE name = ?",
            (*columns.values(), time.time(), name),
        )

    async def history(self, name: str) -> list[VersionRecord]:
        """The latest applies of `name` (Retention.versions), oldest first."""
        return await self._run(self._history, name)

    def _history(self, name: str) -> list[VersionRecord]:
        rows = self._conn.execute(
            """SELECT name, version, generation, spec, applied_at FROM deployment_versions
               WHERE name = ? ORDER BY id""",
            (name,),
        ).fetchall()
        return [VersionRecord(r[0], r[1], r[2], _load_spec(r[3]), r[4]) for r in rows]

    # -- applications --------------------------------------------------------

    async def apply_application(
        self, app: ApplicationSpec, versions: Mapping[str, str]
    ) -> tuple[list[DeploymentRecord], list[DeploymentRecord]]:
        """Makes `app` the application's desired state in one transaction:
        each deployment applied (with `versions[id]`), those of the previous
        application of that name that are not in it marked deleting. Returns
        (applied, deleting). Raises (and changes nothing) as `apply` does."""
        return await self._run(self._apply_application, app, versions)

    def _apply_application(
        self, app: ApplicationSpec, versions: Mapping[str, str]
    ) -> tuple[list[DeploymentRecord], list[DeploymentRecord]]:
        now = time.time()
        with self._transaction():
            old = self._application(app.name)
            gone = sorted(set(old.deployments if old else ()) - set(app.deployment_ids))
            # First, so that their routes are free for the new deployments.
            deleting = [self._mark_deleting(d) for d in gone if self._get(d) is not None]
            records = [self._apply(spec, versions[spec.id]) for spec in app.deployments]
            self._conn.execute(
                """INSERT INTO applications (name, route_prefix, ingress, deployments,
                       generation, created_at, updated_at) VALUES (?, ?, ?, ?, 1, ?, ?)
                   ON CONFLICT (name) DO UPDATE SET route_prefix = excluded.route_prefix,
                       ingress = excluded.ingress, deployments = excluded.deployments,
                       generation = generation + 1, updated_at = excluded.updated_at""",
                (
                    app.name,
                    app.route_prefix,
                    app.ingress,
                    json.dumps(app.deployment_ids),
                    now,
                    now,
                ),
            )
            self._conn.execute(
                "INSERT OR REPLACE INTO application_sources (name, source) VALUES (?, ?)",
                (app.name, app.source),
            )
            self._event(app.name, "", "application_applied", ", ".join(app.deployment_ids))
            return records, deleting

    async def application(self, name: str) -> ApplicationRecord | None:
        return await self._run(self._application, name)

    def _application(self, name: str) -> ApplicationRecord | None:
        row = self._conn.execute(
            _SELECT_APPLICATION + " WHERE applications.name = ?", (name,)
        ).fetchone()
        return _application(row) if row else None

    async def applications(self) -> list[ApplicationRecord]:
        return await self._run(self._applications)

    def _applications(self) -> list[ApplicationRecord]:
        rows = self._conn.execute(_SELECT_APPLICATION + " ORDER BY applications.name").fetchall()
        return [_application(row) for row in rows]

    async def delete_application(self, name: str) -> list[DeploymentRecord]:
        """Forgets the application and marks its deployments deleting (their
        routes go at once). NotFound if unknown. Returns those deployments."""
        return await self._run(self._delete_application, name)

    def _delete_application(self, name: str) -> list[DeploymentRecord]:
        with self._transaction():
            app = self._application(name)
            if app is None:
                raise NotFound(f'application "{name}" not found')
            self._conn.execute("DELETE FROM applications WHERE name = ?", (name,))
            self._conn.execute("DELETE FROM application_sources WHERE name = ?", (name,))
            self._forget_history(name)
            return [self._mark_deleting(d) for d in app.deployments if self._get(d) is not None]

    # -- replicas ------------------------------------------------------------

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

    # -- events --------------------------------------------------------------

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

    async def last_event_id(self) -> int:
        """The id of the newest event; 0 when there is none."""
        return await self._run(self._last_event_id)

    def _last_event_id(self) -> int:
        return self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]

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


_SELECT_DEPLOYMENT = """SELECT name, spec, version, generation, state, message, stable_spec,
    stable_version, is_halted, is_deleting, created_at, updated_at FROM deployments"""
_SELECT_APPLICATION = """SELECT applications.name, route_prefix, ingress, deployments, generation,
    created_at, updated_at, COALESCE(source, '') FROM applications
    LEFT JOIN application_sources USING (name)"""
_SELECT_REPLICA = """SELECT id, deployment, version, code_hash, state, executor, user_config,
    max_concurrent_queries, ref, placement, message, started_at FROM replicas"""


def _connect(path: pathlib.Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE) above.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA busy_timeout = 5000")
    # A checkpointed WAL is cut back to this, not left at its largest.
    conn.execute(f"PRAGMA journal_size_limit = {_WAL_LIMIT_BYTES}")
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found == 0:
        conn.executescript(f"BEGIN; {_SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
    elif found != SCHEMA_VERSION:
        conn.close()
        raise RuntimeError(
            f"{path} has schema version {found}; this control plane knows {SCHEMA_VERSION}"
        )
    conn.executescript(f"BEGIN; {_ADDITIONS} {_CONFIGS_SCHEMA} COMMIT;")
    return conn


def _check_prev_version(spec: DeploymentSpec, stored: str | None) -> None:
    if spec.prev_version is None or spec.prev_version == stored:
        return
    found = f'version "{stored}"' if stored else "no deployment"
    raise VersionConflict(
        f'prev_version "{spec.prev_version}" does not match {found} for "{spec.id}"; '
        "nothing was changed. Re-read the deployment and apply again."
    )


def _spec_bytes(spec: DeploymentSpec) -> bytes:
    return spec.to_proto().SerializeToString(deterministic=True)


def _load_spec(data: bytes) -> DeploymentSpec:
    return DeploymentSpec.from_proto(deployment_pb2.DeploymentSpec.FromString(data))


def _deployment(row: tuple, load: Callable[[bytes], DeploymentSpec]) -> DeploymentRecord:
    return DeploymentRecord(
        name=row[0],
        spec=load(row[1]),
        version=row[2],
        generation=row[3],
        state=DeploymentState(row[4]),
        message=row[5],
        stable_spec=load(row[6]) if row[6] is not None else None,
        stable_version=row[7],
        is_halted=bool(row[8]),
        is_deleting=bool(row[9]),
        created_at=row[10],
        updated_at=row[11],
    )


def _application(row: tuple) -> ApplicationRecord:
    return ApplicationRecord(
        name=row[0],
        route_prefix=row[1],
        ingress=row[2],
        deployments=tuple(json.loads(row[3])),
        generation=row[4],
        created_at=row[5],
        updated_at=row[6],
        source=row[7],
    )


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
