"""Deployment rows and their version history: applying a spec (one
transaction: prev_version check, route check, write, history, event) and
reading what is in force."""

from __future__ import annotations

import time
from collections.abc import Callable

from capstan.errors import AlreadyExists, VersionConflict
from capstan.v1 import deployment_pb2
from controlplane.records import DeploymentRecord, DeploymentState, VersionRecord
from controlplane.spec import DeploymentSpec
from controlplane.store.events import Events

_SELECT_DEPLOYMENT = """SELECT name, spec, version, generation, state, message, stable_spec,
    stable_version, is_halted, is_deleting, created_at, updated_at FROM deployments"""


class Deployments(Events):
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
            self._record_version(spec, version, generation, now)
            self._event(spec.id, "", "applied", f"version {version} (apply #{generation})")
            return self._get(spec.id)  # type: ignore[return-value]

    def _record_version(
        self, spec: DeploymentSpec, version: str, generation: int, now: float
    ) -> None:
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

    async def deployments(
        self, after: str | None = None, limit: int | None = None
    ) -> list[DeploymentRecord]:
        """Every deployment in order of name; with `after`, only those named
        after it, and with `limit`, at most that many (a page of
        ListDeployments reads no more than it may hold)."""
        return await self._run(self._deployments, after, limit)

    def _deployments(self, after: str | None, limit: int | None) -> list[DeploymentRecord]:
        query = _SELECT_DEPLOYMENT + (" WHERE name > ?" if after is not None else "")
        query += " ORDER BY name LIMIT ?"
        params = (*([after] if after is not None else []), -1 if limit is None else limit)
        rows = self._conn.execute(query, params).fetchall()
        if after is None and limit is None:
            self._specs.sweep()  # once per whole listing, so a page forgets nothing
        return [_deployment(row, self._specs.load) for row in rows]

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
