"""Runs the control plane's HTTP app (metrics and dashboard) with uvicorn
on the control plane's own event loop, beside the gRPC server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import grpc
import uvicorn

from capstan.links import ClusterLinks
from capstan.tls import ServerTls
from controlplane.http.app import Sources, make_app
from controlplane.http.metrics import ControlPlaneMetrics
from controlplane.http.traffic import TrafficHistory
from controlplane.reconciler.replica_client import ReplicaClient
from controlplane.settings import Settings
from controlplane.store import Store

log = logging.getLogger("capstan.controlplane")


def _own_credentials(tls: ServerTls | None) -> grpc.ChannelCredentials | None:
    """How the app reaches its own control API: trusting the API's
    certificate, and presenting it too (as `capstan start`'s own proxy does)."""
    if tls is None:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=tls.cert, private_key=tls.key, certificate_chain=tls.cert
    )


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on `port`, or on a free one when it is taken: the
    dashboard is not worth refusing to start for, and status shows the
    port it got."""
    for attempt in (port, 0):
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, attempt))
        except OSError as error:
            sock.close()
            if attempt == 0:
                raise RuntimeError(f"cannot listen on {host} for metrics: {error}") from None
            log.warning("metrics port %d is taken (%s); using a free one", port, error.strerror)
            continue
        sock.listen(128)
        sock.set_inheritable(True)
        return sock
    raise AssertionError("unreachable: the second attempt returns or raises")


class HttpServer:
    """`await start()`, then `await stop()`; `port` is the bound one."""

    def __init__(
        self,
        host: str,
        port: int,
        grpc_address: str,
        settings: Settings,
        store: Store,
        links: ClusterLinks,
    ) -> None:
        self.host, self.port = host, port
        self.metrics = ControlPlaneMetrics(store)
        traffic = TrafficHistory(settings.proxy_url) if settings.proxy_url else None
        self._sources = Sources(
            grpc_address, settings.token, self.metrics, traffic, ReplicaClient(links),
            _own_credentials(settings.tls),
        )  # fmt: skip
        self._server: uvicorn.Server | None = None
        self._socket: socket.socket | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        config = uvicorn.Config(
            make_app(self._sources), host=self.host, port=self.port, loop="none",
            lifespan="off", access_log=False, log_level="warning", log_config=None,
        )  # fmt: skip
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        await server.startup(sockets=[sock])
        self._server, self._socket = server, sock
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(server.main_loop(), name="http-main"))
        self._tasks.append(loop.create_task(self.metrics.follow_events(), name="metric-events"))
        if self._sources.traffic is not None:
            self._tasks.append(loop.create_task(self._sources.traffic.run(), name="traffic"))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            await self._server.shutdown(sockets=[self._socket] if self._socket else None)
            self._server = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._sources.close()
