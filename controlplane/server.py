"""Builds and runs the control plane: store, executors, reconciler and the
grpc.aio server (with health and reflection).

Start-up adopts what already runs: the reconciler's first pass (before the
server reports SERVING) reads the stored replicas and asks each executor what
is alive, so a restart never restarts healthy replicas and never hands
routers an empty route table.

Shutdown order: health NOT_SERVING, route watches ended, stop accepting (in-
flight calls get a grace period), stop the reconciler, close the executors,
close the store. Replicas keep running, to be adopted by the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import time
from collections.abc import Mapping

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from capstan.channels import server_options
from capstan.reflection import enable_reflection
from capstan.tls import listen
from capstan.v1 import controlplane_pb2, controlplane_pb2_grpc, packages_pb2, packages_pb2_grpc
from controlplane.auth import bearer_token_guard
from controlplane.cluster_keys import ClusterKeys
from controlplane.http.server import HttpServer
from controlplane.launch import Credentials
from controlplane.limits import MAX_APPLICATION_BYTES
from controlplane.packages.collector import run_collector
from controlplane.packages.service import PackageService
from controlplane.packages.store import PackageStore
from controlplane.proxy_supervisor import ProxySupervisor
from controlplane.reconciler.loop import Reconciler
from controlplane.reconciler.routes import RouteTable
from controlplane.service import ControlPlaneService
from controlplane.settings import Settings
from controlplane.store import Retention, Store
from controlplane.undecodable import UndecodableRequests
from executors.base import Executor

log = logging.getLogger("capstan.controlplane")

_SERVICE_NAME = controlplane_pb2.DESCRIPTOR.services_by_name["ControlPlaneService"].full_name
_PACKAGES_NAME = packages_pb2.DESCRIPTOR.services_by_name["PackageService"].full_name
# The first pass adopts replicas; serving before it ends would show routers
# an empty table.
_FIRST_PASS_TIMEOUT_S = 60.0


def _options() -> tuple[tuple[str, int], ...]:
    # The largest request is an application; past it (and a little envelope)
    # gRPC refuses the message before it is read in full.
    most = ("grpc.max_receive_message_length", MAX_APPLICATION_BYTES + (64 << 10))
    return (*(o for o in server_options() if o[0] != most[0]), most)


def load_executors(settings: Settings) -> dict[str, Executor]:
    """Every configured executor, found by entry point. A broken or unknown
    plugin fails start-up with a message naming it."""
    from executors.registry import load_executor

    return {
        name: load_executor(name, config, settings.executor_state_dir(name))
        for name, config in settings.executors.items()
    }


class ControlPlane:
    """A running control plane. `await ControlPlane.start(settings)`, then
    `await stop()`; `address` is where it listens (the real port if 0 was
    asked for); `stopped` is set when Shutdown was called. Given a
    `proxy`, it keeps that proxy running while it runs, and stops it last."""

    def __init__(self, settings: Settings, proxy: ProxySupervisor | None = None) -> None:
        self.settings = settings
        self.proxy = proxy
        self._proxy_task: asyncio.Task[None] | None = None
        self._service: ControlPlaneService | None = None
        self.address = ""
        self.stopped = asyncio.Event()
        self._store: Store | None = None
        self._executors: Mapping[str, Executor] = {}
        self._routes = RouteTable()
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self._loop_task: asyncio.Task[None] | None = None
        self._http: HttpServer | None = None
        self._collector_task: asyncio.Task[None] | None = None
        self.reconciler: Reconciler | None = None
        # Where /metrics and the dashboard are served; "" when not.
        self.metrics_url = ""

    @classmethod
    async def start(
        cls,
        settings: Settings,
        executors: Mapping[str, Executor] | None = None,
        proxy: ProxySupervisor | None = None,
    ) -> ControlPlane:
        """Starts the proxy (if given), opens the store, loads executors
        (unless given), adopts running replicas and starts serving."""
        plane = cls(settings, proxy)
        try:
            await plane._start(executors)
        except BaseException:
            await plane.stop()
            raise
        return plane

    async def _start(self, executors: Mapping[str, Executor] | None) -> None:
        settings = self.settings
        keys = ClusterKeys.load_or_create(settings.state_dir)
        self._routes = RouteTable(time.time_ns() // 1_000_000, keys.links)
        retention = Retention(settings.versions_kept, settings.events_kept)
        self._store = await Store.open(settings.db_path, retention)
        self._executors = executors if executors is not None else load_executors(settings)
        # After the executors' settings are checked (a bad one stops start-up
        # with one line), and so that it boots while the first pass adopts.
        if self.proxy is not None:
            self._proxy_task = asyncio.create_task(self.proxy.run(), name="capstan-proxy")
        reconciler = self.reconciler = Reconciler(
            settings, self._store, self._executors, self._routes,
            Credentials(keys, settings.token),
        )  # fmt: skip
        interceptors: list[grpc.aio.ServerInterceptor] = (
            [bearer_token_guard(settings.token)] if settings.token else []
        )
        interceptors.append(UndecodableRequests())
        server = self._server = grpc.aio.server(options=_options(), interceptors=interceptors)
        packages = reconciler.packages = PackageStore(
            settings.packages_dir, settings.max_package_bytes
        )
        service = self._service = ControlPlaneService(
            settings, self._store, reconciler, self._routes, self._executors, self.stopped.set,
            packages,
            # Not a bound method: the service must not keep the plane alive.
            functools.partial(_proxy_status, self.proxy),
        )  # fmt: skip
        controlplane_pb2_grpc.add_ControlPlaneServiceServicer_to_server(service, server)
        packages_pb2_grpc.add_PackageServiceServicer_to_server(PackageService(packages), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        enable_reflection(server, (_SERVICE_NAME, _PACKAGES_NAME, health.SERVICE_NAME))
        try:
            port = listen(server, f"{settings.host}:{settings.port}", settings.tls)
        except RuntimeError as error:
            raise RuntimeError(f"cannot listen on {settings.address}: {error}") from None
        self.address = f"{settings.host}:{port}"
        reconciler.control_plane_address = self.address
        self._loop_task = asyncio.create_task(reconciler.run(), name="capstan-reconciler")
        self._collector_task = asyncio.create_task(
            run_collector(
                self._store, packages, settings.package_grace_s, settings.package_gc_interval_s
            ),
            name="capstan-package-collector",
        )
        async with asyncio.timeout(_FIRST_PASS_TIMEOUT_S):
            await reconciler.next_pass()
        await server.start()
        await self._start_http(reconciler, keys)
        service.metrics_url = self.metrics_url
        await self._health.set(_SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        log.info("control plane listening on %s (state in %s)", self.address, settings.state_dir)

    async def _start_http(self, reconciler: Reconciler, keys: ClusterKeys) -> None:
        settings = self.settings
        if settings.metrics_port is None:
            return
        assert self._store is not None
        self._http = HttpServer(
            settings.host, settings.metrics_port, self.address, settings, self._store, keys.links
        )
        await self._http.start()
        reconciler.on_pass = self._http.metrics.reconcile_seconds.observe
        self.metrics_url = self._http.url
        log.info("metrics and dashboard at %s", self.metrics_url)

    async def stop_replicas(self) -> None:
        """Drains and stops every replica, keeping the deployments stored
        for the next start (what Ctrl-C asks for)."""
        if self._service is not None:
            await self._service.stop_replicas(keep_deployments=True)

    async def stop(self) -> None:
        """Stops serving and releases everything, the proxy last; replicas
        keep running."""
        if self._http is not None:
            await self._http.stop()
            self._http = None
        if self._server is not None:
            await self._health.enter_graceful_shutdown()
            self._routes.close()
            await self._server.stop(self.settings.shutdown_grace_s)
            self._server = None
        for task in (self._collector_task, self._loop_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._loop_task = self._collector_task = None
        for name, executor in self._executors.items():
            try:
                await executor.close()
            except Exception:
                log.exception("executor %s failed to close", name)
        self._executors = {}
        if self._store is not None:
            await self._store.close()
            self._store = None
        if self._proxy_task is not None:
            self._proxy_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._proxy_task
            self._proxy_task = None
        if self.proxy is not None:
            await self.proxy.stop()


def _proxy_status(proxy: ProxySupervisor | None) -> controlplane_pb2.ProxyStatus:
    if proxy is None:
        return controlplane_pb2.ProxyStatus(state=controlplane_pb2.PROXY_STATE_UNSUPERVISED)
    return proxy.status().to_proto()


async def run_control_plane(
    settings: Settings,
    ready: asyncio.Event | None = None,
    executors: Mapping[str, Executor] | None = None,
    proxy: ProxySupervisor | None = None,
) -> None:
    """Serves until Shutdown is called or the process gets SIGTERM/SIGINT.
    Prints the listening line once ready (and sets `ready`). SIGINT (Ctrl-C)
    stops the replicas too, keeping the deployments for the next start;
    SIGTERM leaves them running, to be adopted by the next start."""
    signals = _StopSignals()  # before start-up, which may take a while
    plane = await ControlPlane.start(settings, executors, proxy)
    try:
        print(f"capstan control plane listening on {plane.address}", flush=True)
        if plane.metrics_url:
            print(f"capstan dashboard and metrics at {plane.metrics_url}", flush=True)
        if ready is not None:
            ready.set()
        shutdown = asyncio.create_task(plane.stopped.wait())
        signalled = asyncio.create_task(signals.received.wait())
        await asyncio.wait({shutdown, signalled}, return_when=asyncio.FIRST_COMPLETED)
        shutdown.cancel()
        signalled.cancel()
        if signals.last == signal.SIGINT:
            log.info("interrupted: stopping every replica")
            await plane.stop_replicas()
    finally:
        log.info("control plane stopping")
        await plane.stop()
        log.info("control plane stopped")


class _StopSignals:
    """SIGTERM and SIGINT, as they arrive: `received` is set by the first,
    `last` says which came last."""

    def __init__(self) -> None:
        self.received = asyncio.Event()
        self.last: signal.Signals | None = None
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            # Only the main thread may own signals; an embedded plane skips them.
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, self._got, signum)

    def _got(self, signum: signal.Signals) -> None:
        self.last = signum
        self.received.set()
