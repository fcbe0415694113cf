"""Runs the control plane's HTTP app (metrics and dashboard) with uvicorn
on the control plane's own event loop, beside the gRPC server."""

from __future__ import annotations

import asyncio
import contextlib
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


def _own_credentials(tls: ServerTls | None) -> grpc.ChannelCredentials | None:
    """How the app reaches its own control API: trusting the API's
    certificate, and presenting it too (as `capstan start`'s own proxy does)."""
    if tls is None:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=tls.cert, private_key=tls.key, certificate_chain=tls.cert
    )


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
        try:
            sock = config.bind_socket()
        except SystemExit:  # uvicorn's way of saying the port is taken
            raise RuntimeError(f"cannot listen on {self.host}:{self.port} (metrics port)") from None
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
