"""Records what the reconciler learnt: the one place it writes the store
(replica records through the Fleet; events, failed rollouts, statuses and
removals here) and keeps each deployment's start backoff. What to write is
decided by pure functions (`outcomes.settle`, `status.status_write`).

Each write of a deployment's status names the apply (generation) it was
computed for, so it lands only if no apply or failure came in between.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from controlplane.reconciler import outcomes
from controlplane.reconciler.backoff import Backoff, BackoffPolicy, after_failure
from controlplane.reconciler.fleet import Fleet
from controlplane.reconciler.lifecycle import Phase
from controlplane.reconciler.plan import Desired, Observed
from controlplane.reconciler.scaling_memory import ScalingMemory
from controlplane.reconciler.status import StatusWrite, removable, status, status_write
from controlplane.records import DeploymentRecord, DeploymentState
from controlplane.store import Store

log = logging.getLogger("capstan.controlplane")


class Recorder:
    """Settles outcomes and writes their effects. `on_change` runs whenever
    the route table may have changed."""

    def __init__(
        self,
        store: Store,
        fleet: Fleet,
        scaling: ScalingMemory,
        policy: BackoffPolicy,
        health_failure_threshold: int,
        on_change: Callable[[], None],
    ) -> None:
        self._store = store
        self._fleet = fleet
        self._scaling = scaling
        self._policy = policy
        self._threshold = health_failure_threshold
        self._on_change = on_change
        self.backoffs: dict[str, Backoff] = {}
        # (deployment, generation, version, code_hash) whose start failed for
        # good: start no more of it while the store is being told.
        self.failed_starts: set[tuple[str, int, str, str]] = set()

    async def record(
        self,
        replica_id: str,
        outcome: outcomes.Outcome,
        deployments: Mapping[str, DeploymentRecord],
    ) -> None:
        """What `outcome` means for the replica (if it is still tracked) and
        its deployment (as last read, in `deployments`), written down."""
        replica = self._fleet.get(replica_id)
        if replica is None:
            return
        deployment = deployments.get(replica.deployment)
        context = outcomes.Context(deployment, time.monotonic(), self._threshold)
        effects = outcomes.settle(replica, outcome, context)
        await self._fleet.put(effects.replica)
        if effects.event is not None:
            await self._event(effects)
        if effects.failure is not None:
            self._back_off(replica.deployment, effects.failure)
        if effects.failed_rollout is not None:
            await self._fail(effects, *effects.failed_rollout)
        if effects.is_changed:
            self._on_change()

    async def _event(self, effects: outcomes.Effects) -> None:
        assert effects.event is not None
        kind, message = effects.event
        replica = effects.replica
        level = logging.INFO if kind in ("started", "stopped") else logging.WARNING
        log.log(level, "%s: replica %s %s: %s", replica.deployment, replica.id, kind, message)
        await self._store.add_event(replica.deployment, replica.id, kind, message)

    async def note(self, deployment: str, replica: str, kind: str, message: str) -> None:
        """Records an event the loop decided on: a rollout step, a reason to wait."""
        await self._store.add_event(deployment, replica, kind, message)

    async def scaling_decisions(self) -> None:
        """Records the autoscaler's changes of target since the last pass."""
        for deployment, why in self._scaling.take_decisions():
            await self._store.add_event(deployment, "", "scaled", why)

    def _back_off(self, deployment: str, reason: str) -> None:
        now_mono_s = time.monotonic()
        backoff = after_failure(self.backoffs.get(deployment), now_mono_s, reason, self._policy)
        self.backoffs[deployment] = backoff
        wait_s = backoff.retry_mono_s - now_mono_s
        log.warning("%s: %s; next start in %.1f s", deployment, reason, wait_s)

    async def _fail(
        self, effects: outcomes.Effects, record: DeploymentRecord, message: str
    ) -> None:
        if effects.replica.phase == Phase.GONE:  # its start failed: start no more of it
            self.failed_starts.add(start_key(record, effects.replica.record.version))
        failed = await self._store.fail(record.name, record.generation, message)
        if failed is not None:
            log.warning("%s: rollout of %s failed: %s", record.name, record.version, message)

    async def statuses(
        self,
        desired: Sequence[Desired],
        records: Mapping[str, DeploymentRecord],
        observed: Sequence[Observed],
        now_mono_s: float,
    ) -> None:
        """Assesses each desired deployment and stores its status if it changed."""
        for want in desired:
            record = records[want.name]
            replicas = [r for r in observed if r.deployment == want.name]
            assessed = status(
                want, record, replicas, backoff=self.backoffs.get(want.name),
                now_mono_s=now_mono_s, is_scaling_up=self._scaling.is_scaling_up(want.name),
            )  # fmt: skip
            if assessed is None:
                continue
            if assessed[0] == DeploymentState.HEALTHY:
                self._scaling.settled(want.name)
            write = status_write(record, *assessed)
            if write is not None:
                await self._status(record, write)

    async def _status(self, record: DeploymentRecord, write: StatusWrite) -> None:
        if write.is_rollout_done:
            log.info("%s: version %s is rolled out", record.name, record.version)
            message = f"version {record.version} is rolled out"
            await self._store.add_event(record.name, "", "rolled_out", message)
        if write.is_stable:
            await self._store.mark_stable(record.name, record.generation)
        else:
            await self._store.set_status(record.name, record.generation, write.state, write.message)
        if write.state != record.state:
            why = f": {write.message}" if write.message else ""
            await self._store.add_event(record.name, "", "state", f"{write.state.name}{why}")

    async def remove_deleted(self, records: Iterable[DeploymentRecord]) -> None:
        """Forgets the deleted deployments whose replicas are all gone: the
        one place a deployment leaves the store."""
        with_replicas = {replica.deployment for replica in self._fleet}
        for record in removable(records, with_replicas):
            log.info("%s: deleted", record.name)
            await self._store.remove(record.name, record.generation)
            self.backoffs.pop(record.name, None)


def start_key(record: DeploymentRecord, version: str | None = None) -> tuple[str, int, str, str]:
    """Identifies one apply's code, for `failed_starts`."""
    return (record.name, record.generation, version or record.version, record.code_hash)
