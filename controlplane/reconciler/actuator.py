"""Carries out actions through executors and replica workers: launch, drain
and stop, reconfigure, health-check. Each returns the Outcome for the loop
to record and decides nothing; none raises (one bad replica must not take
the loop down) except to pass on cancellation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

import grpc

from controlplane.reconciler import outcomes as o
from controlplane.reconciler.lifecycle import Replica
from controlplane.reconciler.plan import ReconfigureReplica
from controlplane.reconciler.replica_client import ReplicaClient
from controlplane.records import DeploymentRecord
from controlplane.spec import DeploymentSpec
from executors.base import Executor, ExecutorError, LaunchSpec, ReplicaRef

log = logging.getLogger("capstan.controlplane")

# Drain timings for a replica whose deployment is gone from the store.
_ORPHAN_SPEC_TIMEOUT_S = 20.0
# How long one replica may take to report its ongoing requests; one that
# does not answer in time contributes nothing to that sample.
_STATS_TIMEOUT_S = 1.0

# Records an outcome reached while the task goes on (a drain that ended).
Report = Callable[[o.Outcome], Awaitable[None]]


class Actuator:
    """Acts on replicas through `executors` (by name) and `client`."""

    def __init__(
        self, executors: Mapping[str, Executor], client: ReplicaClient, reconfigure_timeout_s: float
    ) -> None:
        self._executors = executors
        self._client = client
        self._reconfigure_timeout_s = reconfigure_timeout_s
        self._stopping_unknown: set[str] = set()

    async def launch(
        self, deployment: DeploymentRecord, launch: LaunchSpec, report: Report
    ) -> o.Outcome:
        """Prepares and launches one replica of `deployment`."""
        executor = self._executors[deployment.spec.executor]
        try:
            if _builds_environment(deployment.spec):
                await report(o.Preparing("building environment"))
                await executor.prepare(launch)
                await report(o.Preparing(""))
            else:
                await executor.prepare(launch)
            return o.Launched(await executor.launch(launch))
        except ExecutorError as error:
            return o.LaunchFailed(deployment, str(error), is_retryable=error.retryable)
        except Exception as error:  # a plugin bug: log it, treat it as retryable
            replica_id = launch.config.replica_id
            log.exception("executor %s failed to launch %s", executor.name, replica_id)
            return o.LaunchFailed(deployment, repr(error), is_retryable=True)

    async def stop(
        self, replica: Replica, spec: DeploymentSpec | None, *, drain: bool, report: Report
    ) -> o.Outcome:
        """Drains the replica (when `drain`; `spec` is then its deployment's)
        and has its executor stop it."""
        timeout_s = spec.graceful_shutdown_timeout_s if spec else _ORPHAN_SPEC_TIMEOUT_S
        ref = replica.record.ref
        try:
            if drain and ref is not None and spec is not None:
                await self._drain(replica.id, ref, spec)
                await report(o.Drained())
            if ref is not None:
                await self._executors[replica.record.executor].stop(ref, timeout_s)
        except Exception:
            log.exception("could not stop replica %s; will retry", replica.id)
            return o.StopFailed()
        if ref is not None:
            await self._client.forget(ref.address)
        return o.Stopped()

    async def _drain(self, replica_id: str, ref: ReplicaRef, spec: DeploymentSpec) -> None:
        # Routers learn of the new route table by streaming; give them time
        # to stop sending before the replica starts refusing.
        await asyncio.sleep(spec.graceful_shutdown_wait_loop_s)
        try:
            left = await self._client.drain(ref, spec.graceful_shutdown_timeout_s)
        except grpc.aio.AioRpcError as error:
            log.warning("drain of %s failed (%s); stopping it anyway", replica_id, error.code())
        else:
            if left:
                log.warning("replica %s still had %d requests after draining", replica_id, left)

    async def stop_unknown(self, executor: str, ref: ReplicaRef) -> None:
        """Stops a replica an executor runs but the store does not know;
        does nothing while an earlier call is stopping it."""
        if ref.replica_id in self._stopping_unknown:
            return
        log.warning("executor %s runs unknown replica %s; stopping it", executor, ref.replica_id)
        self._stopping_unknown.add(ref.replica_id)
        try:
            await self._executors[executor].stop(ref, _ORPHAN_SPEC_TIMEOUT_S)
        finally:
            self._stopping_unknown.discard(ref.replica_id)

    async def reconfigure(
        self, replica: Replica, action: ReconfigureReplica, deployment: DeploymentRecord
    ) -> o.Outcome:
        """Applies `action`'s user_config and limits in place."""
        ref = replica.record.ref
        assert ref is not None, "a RUNNING replica has a ref"
        try:
            await self._client.reconfigure(
                ref,
                action.user_config,
                action.max_concurrent_queries,
                self._reconfigure_timeout_s,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
                return o.ReconfigureRejected(deployment, error.details() or "")
            log.warning("reconfigure of %s failed (%s); will retry", replica.id, error.code())
            return o.ReconfigureFailed()
        except Exception:
            log.exception("reconfigure of %s failed; will retry", replica.id)
            return o.ReconfigureFailed()
        return o.Reconfigured(action.user_config, action.max_concurrent_queries)

    async def check_health(self, replica: Replica, spec: DeploymentSpec) -> o.Outcome:
        ref = replica.record.ref
        assert ref is not None, "a RUNNING replica has a ref"
        try:
            await self._client.check_health(ref, spec.health_check_timeout_s)
        except grpc.aio.AioRpcError as error:
            return o.HealthChecked(f"{error.code().name}: {error.details()}")
        except Exception as error:  # the call could not be made: a failed check too
            return o.HealthChecked(repr(error))
        return o.HealthChecked(None)

    async def ongoing(self, ref: ReplicaRef) -> int | None:
        """The replica's queued and running requests; None if it did not say."""
        try:
            return await self._client.ongoing_requests(ref, _STATS_TIMEOUT_S)
        except Exception as error:  # a replica that cannot say counts for nothing
            log.debug("no stats from replica at %s: %r", ref.address, error)
            return None


def _builds_environment(spec: DeploymentSpec) -> bool:
    """Whether preparing a replica may take a while (an installer runs)."""
    return bool(spec.replica.pip or spec.replica.conda)
