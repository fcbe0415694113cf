"""The reconcile loop: the only impure part of reconciliation.

Each pass (every `reconcile_interval_s`, and at once when woken by an apply
or delete) reads the desired state from the store, asks every executor what
runs, merges that with the stored replicas (adoption: a stored replica the
executor still runs is kept; one it no longer runs is dead and replaced; one
it runs but the store does not know is stopped), plans, and hands the plan's
actions to the Actuator. A failing pass is logged and the next one runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence

from controlplane.reconciler.actuator import Actuator, Capacity
from controlplane.reconciler.autoscaling import Autoscalers
from controlplane.reconciler.backoff import Backoff, BackoffPolicy, after_failure
from controlplane.reconciler.fleet import Fleet, TrackedReplica
from controlplane.reconciler.plan import (
    Action,
    Desired,
    ReconfigureReplica,
    StartReplica,
    StopReplica,
    plan,
)
from controlplane.reconciler.replica_client import ReplicaClient
from controlplane.reconciler.routes import RouteTable
from controlplane.reconciler.status import assess
from controlplane.records import DeploymentRecord, DeploymentState, ReplicaState
from controlplane.settings import Settings
from controlplane.store import Store
from executors.base import Executor, ReplicaRef

log = logging.getLogger("capstan.controlplane")

# How long one replica may take to report its ongoing requests; one that
# does not answer in time contributes nothing to that sample.
_STATS_TIMEOUT_S = 1.0
_LIVE = (ReplicaState.PENDING, ReplicaState.STARTING, ReplicaState.RUNNING)


@dataclasses.dataclass(frozen=True)
class _Observation:
    """What one executor reported, and when the question was asked."""

    asked_at: float
    refs: Mapping[str, ReplicaRef]


class Reconciler:
    """Drives executors until the replicas match the store. Run `run()` as a
    task; cancel it to stop (replicas keep running, to be adopted later)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        executors: Mapping[str, Executor],
        routes: RouteTable,
    ) -> None:
        self._settings = settings
        self._store = store
        self._executors = executors
        self._routes = routes
        self._fleet = Fleet(store)
        self._client = ReplicaClient()
        self._actuator = Actuator(
            settings, store, self._fleet, executors, self._client,
            on_change=self._changed, on_failure=self._failed,
        )  # fmt: skip
        self._policy = BackoffPolicy(
            settings.backoff_base_s, settings.backoff_max_s, settings.backoff_reset_s
        )
        self._backoffs: dict[str, Backoff] = {}
        self._autoscalers = Autoscalers()
        self._records: dict[str, DeploymentRecord] = {}
        self._wake = asyncio.Event()
        self._passed = asyncio.Event()
        self._is_stopping_all = False

    @property
    def control_plane_address(self) -> str:
        return self._actuator.control_plane_address

    @control_plane_address.setter
    def control_plane_address(self, address: str) -> None:
        """Handed to replicas so handles inside them can reach us."""
        self._actuator.control_plane_address = address

    def wake(self) -> None:
        """Runs a pass now instead of at the next interval."""
        self._wake.set()

    async def next_pass(self) -> None:
        """Returns when the next pass has finished."""
        await self._passed.wait()

    async def run(self) -> None:
        for record in await self._fleet.load():
            log.info("replica %s was starting when we stopped; it will be replaced", record.id)
        log.info("reconciler adopted %d stored replicas", len(self._fleet))
        try:
            async with asyncio.TaskGroup() as tasks:
                self._actuator.bind(tasks)
                tasks.create_task(self._autoscale())
                while True:
                    self._wake.clear()
                    try:
                        await self._pass()
                    except Exception:
                        log.exception("reconcile pass failed; the next one will retry")
                    self._passed.set()
                    self._passed = asyncio.Event()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._settings.reconcile_interval_s):
                            await self._wake.wait()
        finally:
            await self._client.close()

    async def stop_all_replicas(self, timeout_s: float) -> None:
        """Stops (drains) every replica and starts no more. Raises
        TimeoutError if some are still stopping after `timeout_s`."""
        self._is_stopping_all = True
        self.wake()
        async with asyncio.timeout(timeout_s):
            while len(self._fleet):
                await self.next_pass()

    def _changed(self) -> None:
        self._publish()
        self.wake()

    def _failed(self, deployment: str, reason: str) -> None:
        now = time.monotonic()
        backoff = after_failure(self._backoffs.get(deployment), now, reason, self._policy)
        self._backoffs[deployment] = backoff
        log.warning("%s: %s; next start in %.1f s", deployment, reason, backoff.retry_at - now)

    # -- one pass ------------------------------------------------------------

    async def _pass(self) -> None:
        self._records = {r.name: r for r in await self._store.deployments()}
        self._autoscalers.forget_except(self._records)
        observations, capacity = await asyncio.gather(self._observe(), self._capacity())
        await self._merge(observations)
        now = time.monotonic()
        self._check_health(now)
        desired = self._desired(now)
        for action in plan(desired, self._fleet.observed()):
            await self._dispatch(action, capacity)
        await self._finish_stops()
        if not self._is_stopping_all:
            await self._update_statuses(desired, now)
        await self._remove_deleted()
        self._publish()

    async def _observe(self) -> dict[str, _Observation | None]:
        names = list(self._executors)
        results = await asyncio.gather(*(self._observe_one(name) for name in names))
        return dict(zip(names, results, strict=True))

    async def _observe_one(self, name: str) -> _Observation | None:
        asked_at = time.monotonic()
        try:
            async with asyncio.timeout(self._settings.observe_timeout_s):
                refs = await self._executors[name].observe()
        except Exception as error:  # judge no replica dead on a failed look
            log.warning("executor %s could not observe its replicas: %r", name, error)
            return None
        return _Observation(asked_at, {ref.replica_id: ref for ref in refs})

    async def _capacity(self) -> Capacity:
        names = list(self._executors)
        results = await asyncio.gather(*(self._capacity_one(name) for name in names))
        return dict(zip(names, results, strict=True))

    async def _capacity_one(self, name: str) -> Sequence | str:
        try:
            async with asyncio.timeout(self._settings.observe_timeout_s):
                return await self._executors[name].capacity()
        except Exception as error:
            log.warning("executor %s could not report capacity: %r", name, error)
            return repr(error)

    async def _merge(self, observations: Mapping[str, _Observation | None]) -> None:
        for tracked in self._fleet:
            seen = observations.get(tracked.record.executor)
            if seen is None or tracked.state != ReplicaState.RUNNING:
                continue
            if tracked.ref_since < seen.asked_at and tracked.id not in seen.refs:
                await self._bury(tracked)
        for name, seen in observations.items():
            for replica_id, ref in (seen.refs if seen else {}).items():
                if replica_id not in self._fleet:
                    self._actuator.stop_unknown(name, ref)

    async def _bury(self, tracked: TrackedReplica) -> None:
        deployment = tracked.record.deployment
        message = f"replica {tracked.id} exited unexpectedly"
        await self._fleet.remove(tracked)
        await self._store.add_event(deployment, tracked.id, "died", message)
        self._failed(deployment, message)

    def _check_health(self, now: float) -> None:
        for tracked in self._fleet:
            record = self._records.get(tracked.record.deployment)
            if record is None or not tracked.is_routable or tracked.is_checking:
                continue
            if now >= tracked.health_due:
                self._actuator.check_health(tracked, record.spec)

    def _desired(self, now: float) -> list[Desired]:
        if self._is_stopping_all:
            return []
        return [self._desired_one(record, now) for record in self._records.values()]

    def _desired_one(self, record: DeploymentRecord, now: float) -> Desired:
        spec = record.spec
        backoff = self._backoffs.get(record.name)
        is_waiting = backoff is not None and backoff.is_waiting(now)
        is_stopped = record.is_deleting or record.is_halted
        return Desired(
            name=record.name,
            version=record.version,
            code_hash=record.code_hash,
            target=0 if is_stopped else self._target(record),
            user_config=spec.user_config,
            max_concurrent_queries=spec.max_concurrent_queries,
            may_start=not is_waiting and not self._actuator.has_failed_start(record),
        )

    def _target(self, record: DeploymentRecord) -> int:
        if record.spec.autoscaling is None:
            return record.spec.target_replicas
        live = [t for t in self._fleet.of(record.name) if t.state in _LIVE]
        return self._autoscalers.target(record, len(live))

    async def _dispatch(self, action: Action, capacity: Capacity) -> None:
        record = self._records.get(action.deployment)
        if isinstance(action, StartReplica):
            assert record is not None, "the planner starts replicas of known deployments"
            if action.replica_id is None:
                log.info("%s: start a replica (%s)", action.deployment, action.reason)
            await self._actuator.start(action, record, capacity)
            return
        tracked = self._fleet.get(action.replica_id)
        if tracked is None:
            return
        log.info("%s: %s replica %s (%s)", action.deployment, _verb(action), tracked.id,
                 action.reason)  # fmt: skip
        if isinstance(action, StopReplica):
            spec = record.spec if record else None
            await self._actuator.stop(tracked, drain=action.drain, reason=action.reason, spec=spec)
        elif record is not None:
            self._actuator.reconfigure(tracked, action, record)

    async def _finish_stops(self) -> None:
        """Replicas left DRAINING or STOPPING with nothing stopping them: a
        failed stop, or a stop the previous control plane did not finish."""
        leaving = (ReplicaState.DRAINING, ReplicaState.STOPPING)
        for tracked in self._fleet:
            if tracked.state in leaving and not tracked.has_task:
                record = self._records.get(tracked.record.deployment)
                spec = record.spec if record else None
                await self._actuator.stop(tracked, drain=False, reason="finish stopping", spec=spec)

    async def _update_statuses(self, desired: list[Desired], now: float) -> None:
        observed = self._fleet.observed()
        for want in desired:
            record = self._records[want.name]
            replicas = [r for r in observed if r.deployment == want.name]
            if record.is_deleting:
                state, message = DeploymentState.DELETING, f"stopping {len(replicas)} replicas"
            elif record.state == DeploymentState.DEPLOY_FAILED:
                continue  # stays failed, with its reason, until the next apply
            else:
                state, message = assess(
                    want, replicas, is_stable=record.is_stable,
                    backoff=self._backoffs.get(want.name), now=now,
                    is_scaling_up=self._autoscalers.is_scaling_up(want.name),
                )  # fmt: skip
            if state == DeploymentState.HEALTHY:
                self._autoscalers.settled(want.name)
            if state == DeploymentState.HEALTHY and not (
                record.is_stable and record.state == state
            ):
                if not record.is_stable:  # else back to HEALTHY after a scale or a loss
                    log.info("%s: version %s is rolled out", record.name, record.version)
                await self._store.mark_stable(record.name, record.generation)
            elif (state, message) != (record.state, record.message):
                await self._store.set_status(record.name, record.generation, state, message)

    async def _remove_deleted(self) -> None:
        for record in self._records.values():
            if record.is_deleting and not self._fleet.of(record.name):
                log.info("%s: deleted", record.name)
                await self._store.remove(record.name, record.generation)
                self._backoffs.pop(record.name, None)

    # -- autoscaling -----------------------------------------------------------

    async def _autoscale(self) -> None:
        """Polls autoscaled deployments' replicas every metrics interval and
        runs a pass when the autoscaler changes a target. Never dies."""
        while True:
            try:
                await self._autoscale_once()
            except Exception:
                log.exception("autoscaling round failed; the next one will retry")
            now = time.monotonic()
            wait_s = self._settings.reconcile_interval_s
            next_at = self._autoscalers.next_poll_at()
            if next_at is not None:
                wait_s = min(wait_s, max(0.01, next_at - now))
            await asyncio.sleep(wait_s)

    async def _autoscale_once(self) -> None:
        names = self._autoscalers.due(self._records.values(), time.monotonic())
        if not names:
            return
        totals = await asyncio.gather(*(self._total_ongoing(name) for name in names))
        now = time.monotonic()
        changed = [self._autoscalers.sample(n, t, now) for n, t in zip(names, totals, strict=True)]
        if any(changed):
            self.wake()

    async def _total_ongoing(self, deployment: str) -> float | None:
        """Ongoing requests summed over the deployment's RUNNING replicas;
        None when none answered."""
        addresses = [t.record.address for t in self._fleet.of(deployment) if t.is_routable]
        counts = await asyncio.gather(*(self._ongoing_one(a) for a in addresses))
        answered = [c for c in counts if c is not None]
        return float(sum(answered)) if answered else None

    async def _ongoing_one(self, address: str) -> int | None:
        try:
            return await self._client.ongoing_requests(address, _STATS_TIMEOUT_S)
        except Exception as error:  # a replica that cannot say counts for nothing
            log.debug("no stats from replica at %s: %r", address, error)
            return None

    def _publish(self) -> None:
        if self._routes.publish(self._fleet.endpoints(self._records)):
            log.info("route table revision %d", self._routes.revision)


def _verb(action: Action) -> str:
    if isinstance(action, ReconfigureReplica):
        return "reconfigure"
    return "drain and stop" if isinstance(action, StopReplica) and action.drain else "stop"
