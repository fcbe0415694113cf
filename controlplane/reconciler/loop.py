"""The reconcile loop: the only impure part of reconciliation.

Each pass (every `reconcile_interval_s`, and at once when woken by an apply,
a delete or a finished task) gathers observations (the store, what each
executor runs, capacity), asks the pure functions what they mean and what to
do (adoption, desired, plan, status), and hands actions to the Actuator as
tasks. Whatever a task ends with is settled (a pure function) and written
by the Recorder, the one place the store is written (replica records through
the Fleet). A failing pass is logged and the next one runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping

from controlplane.launch import Capacity, Credentials, launch_spec
from controlplane.packages.store import PackageStore
from controlplane.reconciler import adoption, outcomes
from controlplane.reconciler.actuator import Actuator, Report
from controlplane.reconciler.backoff import BackoffPolicy
from controlplane.reconciler.desired import desire
from controlplane.reconciler.fleet import Fleet
from controlplane.reconciler.lifecycle import Phase, Replica
from controlplane.reconciler.observer import Observer
from controlplane.reconciler.plan import (
    Action,
    Budget,
    Desired,
    StartReplica,
    StopReplica,
    plan,
)
from controlplane.reconciler.recorder import Recorder, start_key
from controlplane.reconciler.replica_client import ReplicaClient
from controlplane.reconciler.replica_moves import new_replica, placed, stopped
from controlplane.reconciler.routes import RouteTable
from controlplane.reconciler.scaling_memory import ScalingMemory
from controlplane.reconciler.scaling_poller import ScalingPoller
from controlplane.records import DeploymentRecord, ReplicaState
from controlplane.scheduler import place_on_executor
from controlplane.settings import Settings
from controlplane.store import Store
from executors.base import Executor

log = logging.getLogger("capstan.controlplane")
_LIVE = (ReplicaState.PENDING, ReplicaState.STARTING, ReplicaState.RUNNING)
_STOPPED_BY_TASK = (Phase.DRAINING, Phase.STOPPING)
# Replicas that start (or die) within this long share one route publish: a
# scale-up to a thousand replicas must not rebuild the table a thousand times.
_PUBLISH_COALESCE_S = 0.02


class Reconciler:
    """Drives executors until the replicas match the store. Run `run()` as a
    task; cancel it to stop (replicas keep running, to be adopted later)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        executors: Mapping[str, Executor],
        routes: RouteTable,
        credentials: Credentials,
    ) -> None:
        self._settings = settings
        self._credentials = credentials
        self._store = store
        self._executors = executors
        self._routes = routes
        self._fleet = Fleet(store)
        self._client = ReplicaClient(credentials.keys.links)
        self._actuator = Actuator(executors, self._client, settings.reconfigure_timeout_s)
        policy = BackoffPolicy(
            settings.backoff_base_s, settings.backoff_max_s, settings.backoff_reset_s
        )
        self._scaling = ScalingMemory()
        self._recorder = Recorder(
            store, self._fleet, self._scaling, policy, settings.health_failure_threshold,
            self._changed_soon,
        )  # fmt: skip
        self._observer = Observer(executors, settings.observe_timeout_s)
        self._poller = ScalingPoller(
            self._scaling, self._fleet, self._actuator, lambda: self._records.values(),
            self.wake, settings.reconcile_interval_s,
        )  # fmt: skip
        self._budget = Budget(settings.max_starts_per_pass, settings.max_stops_per_pass)
        self._records: dict[str, DeploymentRecord] = {}
        self._tasks: asyncio.TaskGroup | None = None
        self._wake = asyncio.Event()
        self._passed = asyncio.Event()
        self._is_stopping_all = False
        self._publish_soon: asyncio.TimerHandle | None = None
        self.control_plane_address = ""  # handed to replicas, for their handles
        # Told each pass's duration in seconds (the metrics' histogram).
        self.on_pass: Callable[[float], None] = lambda duration_s: None
        self.packages: PackageStore | None = None  # where uploaded working_dirs are

    @property
    def replica_client(self) -> ReplicaClient:
        """The channels to replicas, for RPCs that ask one (DescribeDeployment)."""
        return self._client

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
                self._tasks = tasks
                tasks.create_task(self._poller.run())
                while True:
                    self._wake.clear()
                    started_s = time.perf_counter()
                    try:
                        await self._pass()
                    except Exception:
                        log.exception("reconcile pass failed; the next one will retry")
                    self.on_pass(time.perf_counter() - started_s)
                    self._passed.set()
                    self._passed = asyncio.Event()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._settings.reconcile_interval_s):
                            await self._wake.wait()
        finally:
            if self._publish_soon is not None:
                self._publish_soon.cancel()
            await self._client.close()

    async def stop_all_replicas(self, timeout_s: float) -> None:
        """Stops (drains) every replica, starts no more, and removes the
        deployments being deleted. Raises TimeoutError if some replicas are
        still stopping after `timeout_s`."""
        self._is_stopping_all = True
        self.wake()
        async with asyncio.timeout(timeout_s):
            while len(self._fleet):
                await self.next_pass()
            await self.next_pass()  # one with no replicas left, to remove the deleted

    # -- one pass ------------------------------------------------------------

    async def _pass(self) -> None:
        self._records = {r.name: r for r in await self._store.deployments()}
        self._scaling.forget_except(self._records)
        observations, capacity = await self._observer.look()
        for replica in adoption.dead(self._fleet, observations):
            await self._record(replica.id, outcomes.Died())
        known = {replica.id for replica in self._fleet}
        for executor, ref in adoption.unknown(known, observations):
            stop = self._actuator.stop_unknown(executor, ref)
            self._spawn(f"stop unknown {ref.replica_id}", None, stop)
        now_mono_s = time.monotonic()
        await self._check_health(now_mono_s)
        await self._recorder.scaling_decisions()
        desired = self._desired(now_mono_s)
        for action in plan(desired, self._fleet.observed(), self._budget):
            await self._dispatch(action, capacity)
        for replica in adoption.unfinished_stops(list(self._fleet)):
            current = self._fleet.get(replica.id)  # as it is after the awaits above
            if current is not None:
                await self._stop(current, drain=False, reason="finish stopping")
        if not self._is_stopping_all:
            observed = self._fleet.observed()
            await self._recorder.statuses(desired, self._records, observed, now_mono_s)
        await self._recorder.remove_deleted(self._records.values())
        self._publish()

    async def _check_health(self, now_mono_s: float) -> None:
        for replica in self._fleet:
            record = self._records.get(replica.deployment)
            if record is None or not outcomes.health_check_due(replica, record, now_mono_s):
                continue
            await self._fleet.put(dataclasses.replace(replica, health_due_mono_s=math.inf))
            check = self._actuator.check_health(replica, record.spec)
            self._spawn(f"health {replica.id}", replica.id, check)

    def _desired(self, now_mono_s: float) -> list[Desired]:
        if self._is_stopping_all:
            return []
        return [
            desire(
                record,
                autoscaled=self._autoscaled(record),
                backoff=self._recorder.backoffs.get(record.name),
                has_failed_start=start_key(record) in self._recorder.failed_starts,
                now_mono_s=now_mono_s,
            )
            for record in self._records.values()
        ]

    def _autoscaled(self, record: DeploymentRecord) -> int | None:
        if record.spec.autoscaling is None or record.is_deleting or record.is_halted:
            return None
        live = [r for r in self._fleet.of(record.name) if r.record.state in _LIVE]
        return self._scaling.target(record, len(live))

    async def _dispatch(self, action: Action, capacity: Capacity) -> None:
        record = self._records.get(action.deployment)
        if isinstance(action, StartReplica):
            assert record is not None, "the planner starts replicas of known deployments"
            if action.replica_id is None:
                log.info("%s: start a replica (%s)", action.deployment, action.reason)
                await self._recorder.note(action.deployment, "", "start", action.reason)
            await self._start(action, record, capacity)
            return
        replica = self._fleet.get(action.replica_id)
        if replica is None:
            return
        verb = "reconfigure"
        if isinstance(action, StopReplica):
            verb = "drain and stop" if action.drain else "stop"
        log.info("%s: %s replica %s (%s)", action.deployment, verb, replica.id, action.reason)
        await self._recorder.note(action.deployment, replica.id, verb, action.reason)
        if isinstance(action, StopReplica):
            await self._stop(replica, drain=action.drain, reason=action.reason)
        elif record is not None and replica.phase == Phase.RUNNING:  # not made SICK meanwhile
            await self._fleet.put(replica.moved(Phase.RECONFIGURING))
            reconfigure = self._actuator.reconfigure(replica, action, record)
            self._spawn(f"reconfigure {replica.id}", replica.id, reconfigure)

    async def _start(self, action: StartReplica, record: DeploymentRecord, cap: Capacity) -> None:
        """Places a replica (a new one, or a PENDING one again) and launches it."""
        spec = record.spec
        replica = self._fleet.get(action.replica_id) or new_replica(
            action, record, f"{record.name}-{secrets.token_hex(4)}", time.time()
        )
        placement = place_on_executor(
            spec.replica, spec.executor,
            schedules_itself=self._executors[spec.executor].capabilities.schedules_itself,
            nodes=cap.get(spec.executor, "not configured"),
            used=self._fleet.placements(spec.executor),
        )  # fmt: skip
        after = placed(replica, placement, time.time())
        await self._fleet.put(after)
        if after.phase == Phase.UNPLACEABLE:
            if after.record.message != replica.record.message:
                log.info("replica %s pending: %s", after.id, after.record.message)
                await self._recorder.note(record.name, after.id, "pending", after.record.message)
            return
        where = after.record.placement
        assert where is not None, "a STARTING replica is placed"
        address = self.control_plane_address
        launch = launch_spec(
            after.record, spec, where, cap, address, self._credentials, self.packages
        )
        report = self._reporter(after.id)
        self._spawn(f"launch {after.id}", after.id, self._actuator.launch(record, launch, report))

    async def _stop(self, replica: Replica, *, drain: bool, reason: str) -> None:
        """Takes a replica out of service: off the route table at once, then
        (if `drain`) drained, then stopped by its executor."""
        record = self._records.get(replica.deployment)
        spec = record.spec if record else None
        after = stopped(replica, drain=drain and spec is not None, reason=reason)
        await self._fleet.put(after)
        if after.phase == Phase.CANCELLED:
            return  # its launch task hands it back when the launch returns
        self._changed()  # routers drop it before the drain begins
        if after.phase in _STOPPED_BY_TASK:
            is_draining = after.phase == Phase.DRAINING
            report = self._reporter(after.id)
            stop = self._actuator.stop(after, spec, drain=is_draining, report=report)
            self._spawn(f"stop {after.id}", after.id, stop)

    # -- tasks and what they end with ------------------------------------------

    def _spawn(self, what: str, replica_id: str | None, work: Awaitable[object]) -> None:
        assert self._tasks is not None, "run() first"
        self._tasks.create_task(self._carry_out(what, replica_id, work))

    async def _carry_out(self, what: str, replica_id: str | None, work: Awaitable[object]) -> None:
        """Runs one action; records its outcome. Logs what it raised instead of
        letting it cancel every other task in the group."""
        try:
            outcome = await work
            if replica_id is not None:
                await self._record(replica_id, outcome)  # type: ignore[arg-type]
        except Exception:
            log.exception("%s failed", what)

    def _reporter(self, replica_id: str) -> Report:
        async def report(outcome: outcomes.Outcome) -> None:
            await self._record(replica_id, outcome)

        return report

    async def _record(self, replica_id: str, outcome: outcomes.Outcome) -> None:
        await self._recorder.record(replica_id, outcome, self._records)

    def _changed(self) -> None:
        self._publish()
        self.wake()

    def _changed_soon(self) -> None:
        if self._publish_soon is None:
            loop = asyncio.get_running_loop()
            self._publish_soon = loop.call_later(_PUBLISH_COALESCE_S, self._changed_now)

    def _changed_now(self) -> None:
        self._publish_soon = None
        self._changed()

    def _publish(self) -> None:
        if self._routes.publish(self._fleet.endpoints(self._records)):
            log.info("route table revision %d", self._routes.revision)
