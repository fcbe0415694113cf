"""The gRPC edge: capstan.v1.ControlPlaneService. Specs are validated here,
once; errors become statuses here, in one place (`_answers_errors`)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import inspect
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import grpc

from capstan.errors import CapstanError, DeadlineExceeded, DeployFailed, InvalidSpec, NotFound
from capstan.v1 import controlplane_pb2 as cp
from capstan.v1 import controlplane_pb2_grpc
from controlplane.reconciler.loop import Reconciler
from controlplane.reconciler.routes import RouteTable
from controlplane.records import DeploymentRecord, DeploymentState, ReplicaRecord
from controlplane.settings import Settings
from controlplane.spec import DeploymentSpec
from controlplane.store import Store
from executors.base import Executor

log = logging.getLogger("capstan.controlplane")

_INTERNAL = "internal error; see the control plane log"
# Shutdown waits this long beyond the slowest deployment's drain timings.
_SHUTDOWN_SLACK_S = 30.0


def _answers_errors(method: Callable) -> Callable:
    """Turns Capstan errors into their status, and anything else into a plain
    INTERNAL (logged with its traceback, never sent to the caller)."""

    @contextlib.asynccontextmanager
    async def mapped(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        try:
            yield
        except grpc.aio.AbortError:
            raise
        except CapstanError as error:
            await context.abort(error.code, error.message)
        except Exception:
            log.exception("%s failed", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, _INTERNAL)

    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def streaming(self: Any, request: Any, context: Any) -> AsyncIterator[Any]:
            async with mapped(context):
                async for item in method(self, request, context):
                    yield item

        return streaming

    @functools.wraps(method)
    async def unary(self: Any, request: Any, context: Any) -> Any:
        async with mapped(context):
            return await method(self, request, context)

    return unary


class ControlPlaneService(controlplane_pb2_grpc.ControlPlaneServiceServicer):
    """Stores specs, wakes the reconciler, and reports what runs."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        reconciler: Reconciler,
        routes: RouteTable,
        executors: Mapping[str, Executor],
        on_shutdown: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._store = store
        self._reconciler = reconciler
        self._routes = routes
        self._executors = executors
        self._on_shutdown = on_shutdown

    @_answers_errors
    async def ApplyDeployment(
        self, request: cp.ApplyDeploymentRequest, context: grpc.aio.ServicerContext
    ) -> cp.ApplyDeploymentResponse:
        """Validates and stores the spec, then (with `wait`) follows the rollout."""
        spec = self._with_executor(DeploymentSpec.from_proto(request.spec))
        version = spec.version if spec.version is not None else secrets.token_hex(6)
        record = await self._store.apply(spec, version)
        log.info("%s: applied version %s (apply #%d)", spec.name, version, record.generation)
        self._reconciler.wake()
        if request.wait:
            async with _deadline(request.timeout_s, f'rollout of "{spec.name}" version {version}'):
                await self._follow_rollout(record)
        return cp.ApplyDeploymentResponse(deployment=await self._deployment(spec.name))

    def _with_executor(self, spec: DeploymentSpec) -> DeploymentSpec:
        name = spec.executor or self._settings.default_executor
        if name not in self._executors:
            known = ", ".join(sorted(self._executors))
            raise InvalidSpec(f"executor {name!r} is not configured; configured executors: {known}")
        self._executors[name].capabilities.require(spec.replica, name)
        # Stored resolved, so a later change of the default moves nothing.
        return dataclasses.replace(spec, executor=name)

    async def _follow_rollout(self, applied: DeploymentRecord) -> None:
        name = applied.name
        while True:
            record = await self._store.get(name)
            if record is None or record.is_deleting:
                raise DeployFailed(f'deployment "{name}" was deleted during its rollout')
            if record.generation != applied.generation:
                raise DeployFailed(
                    f'a later apply of "{name}" (version {record.version}) replaced this one'
                )
            if record.state == DeploymentState.DEPLOY_FAILED:
                raise DeployFailed(record.message)
            if record.state == DeploymentState.HEALTHY and record.is_stable:
                return
            await self._reconciler.next_pass()

    @_answers_errors
    async def DeleteDeployment(
        self, request: cp.DeleteDeploymentRequest, context: grpc.aio.ServicerContext
    ) -> cp.DeleteDeploymentResponse:
        """Marks the deployment deleted (its route goes at once); with `wait`,
        returns when its replicas have stopped."""
        record = await self._store.mark_deleting(request.name)
        log.info("%s: delete requested", request.name)
        self._reconciler.wake()
        while request.wait:
            current = await self._store.get(request.name)
            if current is None or current.generation != record.generation:
                break
            await self._reconciler.next_pass()
        return cp.DeleteDeploymentResponse()

    @_answers_errors
    async def GetDeployment(
        self, request: cp.GetDeploymentRequest, context: grpc.aio.ServicerContext
    ) -> cp.GetDeploymentResponse:
        """The deployment with its state and replicas."""
        return cp.GetDeploymentResponse(deployment=await self._deployment(request.name))

    @_answers_errors
    async def ListDeployments(
        self, request: cp.ListDeploymentsRequest, context: grpc.aio.ServicerContext
    ) -> cp.ListDeploymentsResponse:
        """Every deployment with its state and replicas."""
        records = await self._store.deployments()
        replicas = await self._store.replicas()
        return cp.ListDeploymentsResponse(
            deployments=[
                _deployment_proto(r, [x for x in replicas if x.deployment == r.name])
                for r in records
            ]
        )

    @_answers_errors
    async def WatchRoutes(
        self, request: cp.WatchRoutesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[cp.WatchRoutesResponse]:
        """The route table now, then each time it changes."""
        async for snapshot in self._routes.watch():
            yield snapshot

    @_answers_errors
    async def Shutdown(
        self, request: cp.ShutdownRequest, context: grpc.aio.ServicerContext
    ) -> cp.ShutdownResponse:
        """Drains and stops every replica (deleting the deployments unless
        asked to keep them), then asks the server to stop; the answer comes
        once the replicas are gone."""
        records = await self._store.deployments()
        if not request.keep_deployments:
            records = [await self._store.mark_deleting(r.spec.name) for r in records]
        timeout_s = _SHUTDOWN_SLACK_S + max(
            (r.spec.graceful_shutdown_wait_loop_s + r.spec.graceful_shutdown_timeout_s
             for r in records),
            default=0.0,
        )  # fmt: skip
        log.info("shutdown requested: stopping every replica")
        try:
            await self._reconciler.stop_all_replicas(timeout_s)
        except TimeoutError:
            log.warning("some replicas were still stopping after %.0f s", timeout_s)
        if not request.keep_deployments:
            for record in records:
                await self._store.remove(record.spec.name, record.generation)
        self._on_shutdown()
        return cp.ShutdownResponse()

    async def _deployment(self, name: str) -> cp.Deployment:
        record = await self._store.get(name)
        if record is None:
            raise NotFound(f'deployment "{name}" not found')
        return _deployment_proto(record, await self._store.replicas(name))


@contextlib.asynccontextmanager
async def _deadline(timeout_s: float, what: str) -> AsyncIterator[None]:
    """Bounds a wait by `timeout_s` (0: no bound), answering DEADLINE_EXCEEDED."""
    if timeout_s <= 0:
        yield
        return
    try:
        async with asyncio.timeout(timeout_s):
            yield
    except TimeoutError:
        raise DeadlineExceeded(
            f"{what} did not finish within {timeout_s:g} s; it goes on in the background"
        ) from None


def _deployment_proto(record: DeploymentRecord, replicas: list[ReplicaRecord]) -> cp.Deployment:
    return cp.Deployment(
        spec=record.spec.to_proto(),
        version=record.version,
        state=int(record.state),
        message=record.message,
        replicas=[
            cp.Replica(
                id=r.id,
                version=r.version,
                state=int(r.state),
                address=r.address,
                executor=r.executor,
                node=r.node,
                message=r.message,
            )
            for r in replicas
        ],
    )
