"""The gRPC edge: capstan.v1.ControlPlaneService. Specs are validated here,
once; errors become statuses through the one mapping, `answers_errors`."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Mapping

import grpc

from capstan.errors import DeployFailed, InvalidSpec, NotFound, answers_errors
from capstan.v1 import controlplane_pb2 as cp
from capstan.v1 import controlplane_pb2_grpc
from controlplane.application import (
    ApplicationRecord,
    ApplicationSpec,
    application_state,
    source_struct,
)
from controlplane.deadlines import deadline as _deadline
from controlplane.describing import Describing
from controlplane.observing import Observing
from controlplane.packages.store import PackageStore
from controlplane.paging import decode_token, page_limit, take_page
from controlplane.planning import Planner
from controlplane.reconciler.loop import Reconciler
from controlplane.reconciler.routes import RouteTable
from controlplane.records import DeploymentRecord, DeploymentState, ReplicaRecord
from controlplane.service_changes import ChangeRpcs
from controlplane.settings import Settings
from controlplane.spec import DeploymentSpec
from controlplane.store import Store
from executors.base import Executor

log = logging.getLogger("capstan.controlplane")

# How long a finished rollout waits for routers to be sent its routes; a
# router that is slower than this (or gone) does not hold up the apply.
_ROUTES_SENT_TIMEOUT_S = 2.0
# Shutdown waits this long beyond the slowest deployment's drain timings.
_SHUTDOWN_SLACK_S = 30.0


class ControlPlaneService(
    ChangeRpcs, Describing, Observing, controlplane_pb2_grpc.ControlPlaneServiceServicer
):
    """Stores specs, wakes the reconciler, and reports what runs."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        reconciler: Reconciler,
        routes: RouteTable,
        executors: Mapping[str, Executor],
        on_shutdown: Callable[[], None],
        packages: PackageStore,
        proxy_status: Callable[[], cp.ProxyStatus],
    ) -> None:
        self._settings = settings
        self._store = store
        self._reconciler = reconciler
        self._routes = routes
        self._executors = executors
        self._on_shutdown = on_shutdown
        self._packages = packages
        self._planner = Planner(store, executors, settings.observe_timeout_s)
        self._proxy_status = proxy_status

    @answers_errors
    async def ApplyDeployment(
        self, request: cp.ApplyDeploymentRequest, context: grpc.aio.ServicerContext
    ) -> cp.ApplyDeploymentResponse:
        """Validates and stores the spec, then (with `wait`) follows the rollout."""
        spec = self._with_executor(DeploymentSpec.from_proto(request.spec))
        if spec.application:
            raise InvalidSpec(
                f'application "{spec.application}" is set by ApplyApplication; '
                "apply a deployment on its own without it",
                "application",
            )
        await self._planner.check_fits(spec)
        spec, warnings = await self._keep_versioned_code(spec)
        version = spec.version if spec.version is not None else secrets.token_hex(6)
        record = await self._store.apply(spec, version)
        log.info("%s: applied version %s (apply #%d)", spec.id, version, record.generation)
        self._reconciler.wake()
        if request.wait:
            async with _deadline(request.timeout_s, f'rollout of "{spec.id}" version {version}'):
                await self._follow_rollout(record)
        return cp.ApplyDeploymentResponse(
            deployment=await self._deployment(spec.id), warnings=warnings
        )

    async def _keep_versioned_code(self, spec: DeploymentSpec) -> tuple[DeploymentSpec, list[str]]:
        """An unchanged `version` means "do not redeploy the code" (Ray Serve's
        rule): the stored code and constructor arguments stay, and the caller
        is warned when what they sent differs."""
        stored = await self._store.get(spec.id)
        if spec.version is None or stored is None or stored.version != spec.version:
            return spec, []
        kept = dataclasses.replace(
            spec,
            import_path=stored.spec.import_path,
            sdk_object=stored.spec.sdk_object,
            code_fingerprint=stored.spec.code_fingerprint,
            init_arguments=stored.spec.init_arguments,
            sdk_init_arguments=stored.spec.sdk_init_arguments,
        )
        if _same_code(stored.spec, spec):
            return kept, []
        warning = (
            f'deployment "{spec.id}": version "{spec.version}" is unchanged but the code or '
            "constructor arguments differ from the running ones; the running code is kept. "
            "Change `version` to roll out the new code."
        )
        log.warning("%s", warning)
        return kept, [warning]

    @answers_errors
    async def ApplyApplication(
        self, request: cp.ApplyApplicationRequest, context: grpc.aio.ServicerContext
    ) -> cp.ApplyApplicationResponse:
        """Validates and stores a whole application, replacing the one of that
        name; then (with `wait`) follows every deployment's rollout."""
        app, warnings = await self._prepare_application(request.application)
        for spec in app.deployments:
            await self._planner.check_fits(spec)
        versions = {s.id: s.version or secrets.token_hex(6) for s in app.deployments}
        records, deleting = await self._store.apply_application(app, versions)
        log.info("application %s: applied %s", app.name, ", ".join(app.deployment_ids))
        self._reconciler.wake()
        if request.wait:  # done when the new ones serve and the old ones are gone
            async with _deadline(request.timeout_s, f'rollout of application "{app.name}"'):
                await asyncio.gather(
                    *(self._follow_rollout(r) for r in records),
                    *(self._follow_delete(r) for r in deleting),
                )
        return cp.ApplyApplicationResponse(
            application=await self._application(app.name), warnings=warnings
        )

    async def _prepare_application(
        self, wire: cp.ApplicationSpec
    ) -> tuple[ApplicationSpec, list[str]]:
        """The application validated, each deployment with its executor and
        (under an unchanged version) its stored code; with the warnings."""
        app = ApplicationSpec.from_proto(wire)
        specs, warnings = [], []
        for spec in app.deployments:
            spec, warned = await self._keep_versioned_code(self._with_executor(spec))
            specs.append(spec)
            warnings += warned
        return dataclasses.replace(app, deployments=tuple(specs)), warnings

    @answers_errors
    async def DeleteApplication(
        self, request: cp.DeleteApplicationRequest, context: grpc.aio.ServicerContext
    ) -> cp.DeleteApplicationResponse:
        """Forgets the application and deletes its deployments; with `wait`,
        returns when their replicas have stopped."""
        records = await self._store.delete_application(request.name)
        log.info("application %s: delete requested", request.name)
        self._reconciler.wake()
        if request.wait:
            await asyncio.gather(*(self._follow_delete(r) for r in records))
        return cp.DeleteApplicationResponse()

    @answers_errors
    async def GetApplication(
        self, request: cp.GetApplicationRequest, context: grpc.aio.ServicerContext
    ) -> cp.GetApplicationResponse:
        """The application with its state and deployments."""
        return cp.GetApplicationResponse(application=await self._application(request.name))

    @answers_errors
    async def ListApplications(
        self, request: cp.ListApplicationsRequest, context: grpc.aio.ServicerContext
    ) -> cp.ListApplicationsResponse:
        """One page of the applications, with their state and deployments."""
        # Build only what the page may hold: the applications after the
        # token (the store gives them by name), one past the page at most.
        after = decode_token(request.page_token)
        apps = [
            app for app in await self._store.applications() if after is None or app.name > after
        ]
        apps = apps[: page_limit(request.page_size) + 1]
        found = [(app.name, await self._application(app.name, app)) for app in apps]
        page = take_page(
            found,
            lambda app: app,
            cp.Application.ByteSize,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return cp.ListApplicationsResponse(
            applications=page.items, next_page_token=page.next_page_token
        )

    async def _application(self, name: str, app: ApplicationRecord | None = None) -> cp.Application:
        app = app or await self._store.application(name)
        if app is None:
            raise NotFound(f'application "{name}" not found')
        deployments = []
        for deployment_id in app.deployments:
            with contextlib.suppress(NotFound):  # removed meanwhile
                deployments.append(await self._deployment(deployment_id))
        state, message = application_state([(d.state, d.message) for d in deployments])
        return cp.Application(
            name=app.name,
            route_prefix=app.route_prefix or "",
            ingress=app.ingress,
            state=int(state),
            message=message,
            deployments=deployments,
            source=source_struct(app.source),
        )

    def _with_executor(self, spec: DeploymentSpec) -> DeploymentSpec:
        name = spec.executor or self._settings.default_executor
        if name not in self._executors:
            known = ", ".join(sorted(self._executors))
            raise InvalidSpec(
                f"executor {name!r} is not configured; configured executors: {known}", "executor"
            )
        self._executors[name].capabilities.require(spec.replica, name)
        self._packages.check(spec)
        spec.require_replicas_at_most(self._settings.max_replicas_per_deployment)
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
                # Done when routers have been sent the routes to it, so a
                # request right after the apply finds it.
                await self._routes.sent_to_all(self._routes.revision, _ROUTES_SENT_TIMEOUT_S)
                return
            await self._reconciler.next_pass()

    @answers_errors
    async def DeleteDeployment(
        self, request: cp.DeleteDeploymentRequest, context: grpc.aio.ServicerContext
    ) -> cp.DeleteDeploymentResponse:
        """Marks the deployment deleted (its route goes at once); with `wait`,
        returns when its replicas have stopped."""
        record = await self._store.mark_deleting(request.name)
        log.info("%s: delete requested", request.name)
        self._reconciler.wake()
        if request.wait:
            await self._follow_delete(record)
        return cp.DeleteDeploymentResponse()

    async def _follow_delete(self, record: DeploymentRecord) -> None:
        while True:
            current = await self._store.get(record.name)
            if current is None or current.generation != record.generation:
                return
            await self._reconciler.next_pass()

    @answers_errors
    async def GetDeployment(
        self, request: cp.GetDeploymentRequest, context: grpc.aio.ServicerContext
    ) -> cp.GetDeploymentResponse:
        """The deployment with its state and replicas."""
        return cp.GetDeploymentResponse(deployment=await self._deployment(request.name))

    @answers_errors
    async def ListDeployments(
        self, request: cp.ListDeploymentsRequest, context: grpc.aio.ServicerContext
    ) -> cp.ListDeploymentsResponse:
        """One page of the deployments, with their state and replicas."""
        # Read only what the page may hold: one record past it at most.
        after = decode_token(request.page_token)
        records = await self._store.deployments(after, page_limit(request.page_size) + 1)
        replicas: dict[str, list] = {}
        for replica in await self._store.replicas():
            replicas.setdefault(replica.deployment, []).append(replica)
        page = take_page(
            ((r.name, r) for r in records),
            lambda r: _deployment_proto(r, replicas.get(r.name, [])),
            cp.Deployment.ByteSize,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return cp.ListDeploymentsResponse(
            deployments=page.items, next_page_token=page.next_page_token
        )

    @answers_errors
    async def WatchRoutes(
        self, request: cp.WatchRoutesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[cp.WatchRoutesResponse]:
        """The route table now, then each time it changes."""
        async for snapshot in self._routes.watch():
            yield snapshot

    @answers_errors
    async def Shutdown(
        self, request: cp.ShutdownRequest, context: grpc.aio.ServicerContext
    ) -> cp.ShutdownResponse:
        """Drains and stops every replica (deleting the deployments unless
        asked to keep them), then asks the server to stop; the answer comes
        once the replicas are gone."""
        await self.stop_replicas(keep_deployments=request.keep_deployments)
        self._on_shutdown()
        return cp.ShutdownResponse()

    async def stop_replicas(self, *, keep_deployments: bool) -> None:
        """Drains and stops every replica (Shutdown, and Ctrl-C on the
        control plane), deleting the deployments unless they are kept."""
        records = await self._store.deployments()
        if not keep_deployments:
            for app in await self._store.applications():
                await self._store.delete_application(app.name)
            records = [await self._store.mark_deleting(r.name) for r in records]
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

    @answers_errors
    async def GetProxyStatus(
        self, request: cp.GetProxyStatusRequest, context: grpc.aio.ServicerContext
    ) -> cp.GetProxyStatusResponse:
        """The supervised proxy's state, pid and restarts."""
        return cp.GetProxyStatusResponse(proxy=self._proxy_status())

    async def _deployment(self, name: str) -> cp.Deployment:
        record = await self._store.get(name)
        if record is None:
            raise NotFound(f'deployment "{name}" not found')
        return _deployment_proto(record, await self._store.replicas(name))


def _same_code(running: DeploymentSpec, sent: DeploymentSpec) -> bool:
    """Whether `sent` carries the code and constructor arguments that run:
    by source fingerprint when both have one (pickles of the same class
    differ from process to process), else byte for byte."""
    arguments = ("init_arguments", "sdk_init_arguments")
    if any(getattr(running, name) != getattr(sent, name) for name in arguments):
        return False
    if running.code_fingerprint and sent.code_fingerprint:
        return running.code_fingerprint == sent.code_fingerprint
    return (running.import_path, running.sdk_object) == (sent.import_path, sent.sdk_object)


def _deployment_proto(record: DeploymentRecord, replicas: list[ReplicaRecord]) -> cp.Deployment:
    return cp.Deployment(
        id=record.name,
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
