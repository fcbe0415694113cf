"""Carries out the planner's actions through executors and replica workers:
start, drain and stop, reconfigure, health-check. Each long step runs as a
task in the reconciler's TaskGroup; a task never raises (one bad replica
must not take the loop down) except to pass on cancellation.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

import grpc

from controlplane.launch import launch_spec
from controlplane.reconciler.fleet import Fleet, TrackedReplica
from controlplane.reconciler.plan import ReconfigureReplica, StartReplica
from controlplane.reconciler.replica_client import ReplicaClient
from controlplane.records import DeploymentRecord, ReplicaRecord, ReplicaState
from controlplane.scheduler import NoFit, Placement, place
from controlplane.settings import Settings
from controlplane.spec import DeploymentSpec
from controlplane.store import Store
from executors.base import Executor, ExecutorError, LaunchSpec, Node, ReplicaRef

log = logging.getLogger("capstan.controlplane")

# Drain timings for a replica whose deployment is gone from the store.
_ORPHAN_SPEC_TIMEOUT_S = 20.0

# Capacity per executor this pass: nodes, or why they could not be read.
Capacity = Mapping[str, Sequence[Node] | str]


class Actuator:
    """Acts on replicas. `on_change` is called whenever the route table may
    have changed; `on_failure(deployment, reason)` feeds the backoff."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        fleet: Fleet,
        executors: Mapping[str, Executor],
        client: ReplicaClient,
        on_change: Callable[[], None],
        on_failure: Callable[[str, str], None],
    ) -> None:
        self._settings = settings
        self._store = store
        self._fleet = fleet
        self._executors = executors
        self._client = client
        self._on_change = on_change
        self._on_failure = on_failure
        self._tasks: asyncio.TaskGroup | None = None
        self._stopping_unknown: set[str] = set()
        # (deployment, generation, version, code_hash) whose start failed for
        # good: start no more of it while the store is being told.
        self._failed_starts: set[tuple[str, int, str, str]] = set()
        self.control_plane_address = ""

    def bind(self, tasks: asyncio.TaskGroup) -> None:
        """The TaskGroup that owns every task started from here."""
        self._tasks = tasks

    def _spawn(self, what: str, coro: Awaitable[None]) -> None:
        assert self._tasks is not None, "Actuator.bind() first"
        self._tasks.create_task(_guard(what, coro))

    def has_failed_start(self, record: DeploymentRecord) -> bool:
        key = (record.name, record.generation, record.version, record.code_hash)
        return key in self._failed_starts

    # -- start ---------------------------------------------------------------

    async def start(
        self, action: StartReplica, record: DeploymentRecord, capacity: Capacity
    ) -> None:
        """Places a replica (a new one, or a PENDING one again) and launches it."""
        tracked = self._fleet.get(action.replica_id) if action.replica_id else None
        if tracked is None:
            tracked = await self._fleet.add(_new_record(action, record))
        spec = record.spec
        executor = self._executors[spec.executor]
        placement = self._place(executor, spec, capacity.get(spec.executor, "not configured"))
        if isinstance(placement, NoFit):
            tracked.is_unplaceable = True
            if tracked.record.message != placement.reason:
                log.info("replica %s pending: %s", tracked.id, placement.reason)
                await self._fleet.update(tracked, message=placement.reason)
            return
        tracked.is_unplaceable = False
        await self._fleet.update(
            tracked, state=ReplicaState.STARTING, placement=placement, message="",
            started_at=time.time(),
        )  # fmt: skip
        launch = launch_spec(
            tracked.record,
            spec,
            placement,
            _node(capacity, spec, placement),
            self.control_plane_address,
        )
        tracked.has_task = True
        self._spawn(f"launch {tracked.id}", self._launch(tracked, record, executor, launch))

    def _place(
        self, executor: Executor, spec: DeploymentSpec, nodes: Sequence[Node] | str
    ) -> Placement | NoFit:
        options = spec.replica
        if executor.capabilities.schedules_itself:
            return Placement(node="", num_cpus=options.num_cpus, resources=options.resources)
        if isinstance(nodes, str):
            return NoFit(f"cannot read the capacity of executor {spec.executor!r}: {nodes}")
        return place(options, nodes, self._fleet.placements(spec.executor))

    async def _launch(
        self,
        tracked: TrackedReplica,
        record: DeploymentRecord,
        executor: Executor,
        launch: LaunchSpec,
    ) -> None:
        try:
            if _builds_environment(record.spec):
                await self._fleet.update(tracked, message="building environment")
                await executor.prepare(launch)
                await self._fleet.update(tracked, message="")
            else:
                await executor.prepare(launch)
            ref = await executor.launch(launch)
        except ExecutorError as error:
            tracked.has_task = False
            await self._launch_failed(tracked, record, str(error), is_final=not error.retryable)
            return
        except Exception as error:  # a plugin bug: log it, treat it as retryable
            log.exception("executor %s failed to launch %s", executor.name, tracked.id)
            tracked.has_task = False
            await self._launch_failed(tracked, record, repr(error), is_final=False)
            return
        if tracked.is_doomed:
            log.info("replica %s started after it was asked to stop; stopping it", tracked.id)
            await self._fleet.update(tracked, ref=ref)
            await self._finish_stop(tracked, drain=False, spec=record.spec)
            return
        tracked.has_task = False
        tracked.ref_since = time.monotonic()
        tracked.health_due = tracked.ref_since + record.spec.health_check_period_s
        await self._fleet.update(tracked, state=ReplicaState.RUNNING, ref=ref, message="")
        log.info("replica %s of %s running at %s", tracked.id, record.name, ref.address)
        await self._store.add_event(record.name, tracked.id, "started", f"at {ref.address}")
        self._on_change()

    async def _launch_failed(
        self, tracked: TrackedReplica, record: DeploymentRecord, error: str, *, is_final: bool
    ) -> None:
        await self._fleet.remove(tracked)
        version = tracked.record.version
        message = f"replica of version {version} failed to start: {error}"
        log.warning("%s: %s", record.name, message)
        await self._store.add_event(record.name, tracked.id, "start_failed", message)
        is_stable = (
            record.stable_spec is not None
            and record.stable_version == version
            and record.stable_spec.code_hash() == tracked.record.code_hash
        )
        if is_final and not is_stable:
            # A new version whose code fails: stop the rollout, no crash loop.
            self._failed_starts.add((record.name, record.generation, version, record.code_hash))
            await self._fail(record, message)
        else:
            self._on_failure(record.name, message)
        self._on_change()

    async def _fail(self, record: DeploymentRecord, message: str) -> None:
        failed = await self._store.fail(record.name, record.generation, message)
        if failed is not None:
            log.warning("%s: rollout of %s failed: %s", record.name, record.version, message)

    # -- stop ----------------------------------------------------------------

    async def stop(
        self, tracked: TrackedReplica, *, drain: bool, reason: str, spec: DeploymentSpec | None
    ) -> None:
        """Takes a replica out of service: off the route table at once, then
        (if `drain`) drained, then stopped by its executor."""
        if tracked.state == ReplicaState.PENDING:
            await self._fleet.remove(tracked)
            self._on_change()
            return
        if tracked.state == ReplicaState.STARTING:
            # Its launch is in flight; the launch task stops it on return.
            tracked.is_doomed = True
            await self._fleet.update(tracked, state=ReplicaState.STOPPING, message=reason)
            return
        is_draining = drain and tracked.state == ReplicaState.RUNNING
        state = ReplicaState.DRAINING if is_draining else ReplicaState.STOPPING
        await self._fleet.update(tracked, state=state, message=reason)
        self._on_change()  # routers drop it before the drain begins
        tracked.has_task = True
        self._spawn(f"stop {tracked.id}", self._finish_stop(tracked, drain=is_draining, spec=spec))

    async def _finish_stop(
        self, tracked: TrackedReplica, *, drain: bool, spec: DeploymentSpec | None
    ) -> None:
        timeout_s = spec.graceful_shutdown_timeout_s if spec else _ORPHAN_SPEC_TIMEOUT_S
        ref = tracked.record.ref
        try:
            if drain and ref is not None and spec is not None:
                await self._drain(tracked, ref, spec)
            if ref is not None:
                await self._executors[tracked.record.executor].stop(ref, timeout_s)
        except Exception:  # retried on a later pass
            log.exception("could not stop replica %s; will retry", tracked.id)
            tracked.has_task = False
            return
        await self._fleet.remove(tracked)
        if ref is not None:
            await self._client.forget(ref.address)
        log.info("replica %s of %s stopped", tracked.id, tracked.record.deployment)
        await self._store.add_event(
            tracked.record.deployment, tracked.id, "stopped", tracked.record.message
        )
        self._on_change()

    async def _drain(self, tracked: TrackedReplica, ref: ReplicaRef, spec: DeploymentSpec) -> None:
        # Routers learn of the new route table by streaming; give them time
        # to stop sending before the replica starts refusing.
        await asyncio.sleep(spec.graceful_shutdown_wait_loop_s)
        try:
            left = await self._client.drain(ref.address, spec.graceful_shutdown_timeout_s)
        except grpc.aio.AioRpcError as error:
            log.warning("drain of %s failed (%s); stopping it anyway", tracked.id, error.code())
        else:
            if left:
                log.warning("replica %s still had %d requests after draining", tracked.id, left)
        await self._fleet.update(tracked, state=ReplicaState.STOPPING)

    def stop_unknown(self, executor: str, ref: ReplicaRef) -> None:
        """Stops a replica an executor runs but the store does not know."""
        if ref.replica_id in self._stopping_unknown:
            return
        log.warning("executor %s runs unknown replica %s; stopping it", executor, ref.replica_id)
        self._stopping_unknown.add(ref.replica_id)
        self._spawn(f"stop unknown {ref.replica_id}", self._stop_unknown(executor, ref))

    async def _stop_unknown(self, executor: str, ref: ReplicaRef) -> None:
        try:
            await self._executors[executor].stop(ref, _ORPHAN_SPEC_TIMEOUT_S)
        finally:
            self._stopping_unknown.discard(ref.replica_id)

    # -- reconfigure and health ----------------------------------------------

    def reconfigure(
        self, tracked: TrackedReplica, action: ReconfigureReplica, record: DeploymentRecord
    ) -> None:
        tracked.is_busy = True
        self._spawn(f"reconfigure {tracked.id}", self._reconfigure(tracked, action, record))

    async def _reconfigure(
        self, tracked: TrackedReplica, action: ReconfigureReplica, record: DeploymentRecord
    ) -> None:
        try:
            await self._client.reconfigure(
                tracked.record.address,
                action.user_config,
                action.max_concurrent_queries,
                self._settings.reconfigure_timeout_s,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
                await self._reconfigure_rejected(tracked, record, error.details() or "")
            else:
                log.warning("reconfigure of %s failed (%s); will retry", tracked.id, error.code())
            return
        finally:
            tracked.is_busy = False
        user_config = action.user_config
        if user_config is None:
            user_config = tracked.record.user_config
        await self._fleet.update(
            tracked, user_config=user_config, max_concurrent_queries=action.max_concurrent_queries
        )
        log.info("replica %s reconfigured", tracked.id)
        self._on_change()

    async def _reconfigure_rejected(
        self, tracked: TrackedReplica, record: DeploymentRecord, details: str
    ) -> None:
        message = f"reconfigure of replica {tracked.id} failed: {details}"
        await self._store.add_event(record.name, tracked.id, "reconfigure_failed", message)
        if record.is_stable:
            # It cannot take the config that already rolled out: replace it.
            tracked.is_sick = True
            await self._fleet.update(tracked, message=message)
            self._on_change()
        else:
            await self._fail(record, message)

    def check_health(self, tracked: TrackedReplica, spec: DeploymentSpec) -> None:
        tracked.is_checking = True
        self._spawn(f"health {tracked.id}", self._check_health(tracked, spec))

    async def _check_health(self, tracked: TrackedReplica, spec: DeploymentSpec) -> None:
        try:
            await self._client.check_health(tracked.record.address, spec.health_check_timeout_s)
        except grpc.aio.AioRpcError as error:
            tracked.health_failures += 1
            if tracked.health_failures >= self._settings.health_failure_threshold:
                await self._mark_unhealthy(tracked, f"{error.code().name}: {error.details()}")
        else:
            tracked.health_failures = 0
        finally:
            tracked.is_checking = False
            tracked.health_due = time.monotonic() + spec.health_check_period_s

    async def _mark_unhealthy(self, tracked: TrackedReplica, detail: str) -> None:
        if tracked.is_sick or tracked.state != ReplicaState.RUNNING:
            return
        tracked.is_sick = True
        message = f"failed {tracked.health_failures} health checks in a row: {detail}"
        log.warning("replica %s %s", tracked.id, message)
        await self._fleet.update(tracked, message=message)
        deployment = tracked.record.deployment
        await self._store.add_event(deployment, tracked.id, "unhealthy", message)
        self._on_failure(deployment, f"replica {tracked.id} {message}")
        self._on_change()


def _node(capacity: Capacity, spec: DeploymentSpec, placement: Placement) -> Node | None:
    nodes = capacity.get(spec.executor)
    if nodes is None or isinstance(nodes, str):
        return None
    return next((node for node in nodes if node.name == placement.node), None)


def _new_record(action: StartReplica, record: DeploymentRecord) -> ReplicaRecord:
    spec = record.spec
    return ReplicaRecord(
        id=f"{record.name}-{secrets.token_hex(4)}",
        deployment=record.name,
        version=action.version,
        code_hash=action.code_hash,
        state=ReplicaState.PENDING,
        executor=spec.executor,
        user_config=spec.user_config,
        max_concurrent_queries=spec.max_concurrent_queries,
        started_at=time.time(),
    )


async def _guard(what: str, coro: Awaitable[None]) -> None:
    """Runs one action task; logs what it raised instead of letting it cancel
    every other task in the group. Cancellation passes through."""
    try:
        await coro
    except Exception:
        log.exception("%s failed", what)


def _builds_environment(spec: DeploymentSpec) -> bool:
    """Whether preparing a replica may take a while (an installer runs)."""
    return bool(spec.replica.pip or spec.replica.conda)
