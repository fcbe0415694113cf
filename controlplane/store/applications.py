"""Application rows and the source each was applied from: an application
applies, replaces and deletes its deployments in one transaction."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

from capstan.errors import NotFound
from controlplane.application import ApplicationRecord, ApplicationSpec
from controlplane.records import DeploymentRecord
from controlplane.store.rollout import Rollout

_SELECT_APPLICATION = """SELECT applications.name, route_prefix, ingress, deployments, generation,
    created_at, updated_at, COALESCE(source, '') FROM applications
    LEFT JOIN application_sources USING (name)"""


class Applications(Rollout):
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
