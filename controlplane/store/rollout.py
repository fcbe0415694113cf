"""What the reconciler writes about a deployment as it rolls out: its
status, that it is stable, that it failed (and what it falls back to), and
its deletion."""

from __future__ import annotations

import time

from capstan.errors import NotFound
from controlplane.records import DeploymentRecord, DeploymentState
from controlplane.store.deployments import Deployments


class Rollout(Deployments):
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
