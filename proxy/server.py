"""The proxy process: HTTP (uvicorn), the gRPC DataPlane and the route watcher
on one event loop, sharing one Router.

Everything gRPC is created inside the running loop (grpc.aio objects belong
to the loop that made them). Shutdown order: health NOT_SERVING, stop
accepting, let in-flight requests finish up to a deadline, close clients.
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
import socket
import ssl
from dataclasses import dataclass
from typing import Self

import grpc
import uvicorn
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from capstan import defaults
from capstan.channels import server_options
from capstan.links import ClusterLinks
from capstan.reflection import enable_reflection
from capstan.tls import ServerTls, listen
from capstan.v1 import dataplane_pb2, dataplane_pb2_grpc
from proxy.access_log import AccessLog
from proxy.dataplane import DataPlane
from proxy.http import DEFAULT_MAX_BODY_BYTES, HttpProxy
from proxy.metrics import ProxyMetrics
from proxy.observer import RequestObserver
from proxy.router import Router
from proxy.routes import RouteTable
from proxy.watcher import RouteWatcher, Snapshot

log = logging.getLogger(__name__)

_DATAPLANE = dataplane_pb2.DESCRIPTOR.services_by_name["DataPlaneService"].full_name
# How long in-flight requests get to finish when the proxy stops.
DRAIN_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Settings:
    """What the proxy process is told at start-up."""

    control_plane: str
    http_host: str = "127.0.0.1"
    http_port: int = defaults.HTTP_PORT
    grpc_host: str = "127.0.0.1"
    grpc_port: int = defaults.GRPC_PORT
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    drain_timeout_s: float = DRAIN_TIMEOUT_S
    # How long a request for a deployment with no replica waits for one.
    no_replica_timeout_s: float = 5.0
    # How long start-up waits for a first route table before serving anyway.
    first_routes_timeout_s: float = 2.0
    # Where the access log goes (one JSON line per request); empty: nowhere.
    access_log: str = ""
    # Serve HTTPS and the DataPlane over TLS with this certificate and key
    # (PEM files); with tls_client_ca, clients must present a certificate.
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""

    @property
    def tls(self) -> ServerTls | None:
        return ServerTls.from_files(self.tls_cert, self.tls_key, self.tls_client_ca)

    # How long a request may run before 504 / DEADLINE_EXCEEDED, for
    # deployments that set no request_timeout_s; None: no limit.
    request_timeout_s: float | None = None

    def __post_init__(self) -> None:
        timeout = self.request_timeout_s
        if timeout is not None and not 0 < timeout <= 86_400:
            raise ValueError(
                f"request_timeout_s must be > 0 and at most 86400 (one day), got {timeout}"
            )


class ProxyServer:
    """Use as `async with ProxyServer(settings) as proxy:`; ports of 0 are
    replaced by the ones bound (`http_port`, `grpc_port`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.router = Router(
            no_replica_timeout_s=settings.no_replica_timeout_s,
            drain_grace_s=settings.drain_timeout_s,
            request_timeout_s=settings.request_timeout_s,
        )
        access_log = AccessLog(pathlib.Path(settings.access_log)) if settings.access_log else None
        self.observer = RequestObserver(ProxyMetrics(self.router), access_log)
        self.app = HttpProxy(
            self.router, max_body_bytes=settings.max_body_bytes, observer=self.observer
        )
        self.watcher = RouteWatcher(settings.control_plane, self._apply)
        self.http_port = settings.http_port
        self.grpc_port = settings.grpc_port
        self._health = health.aio.HealthServicer()
        self._grpc: grpc.aio.Server | None = None
        self._uvicorn: uvicorn.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Binds both servers and starts following the route table."""
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self.watcher.run(), name="route-watcher"))
        if self.observer.access_log is not None:
            access_log = self.observer.access_log.run()
            self._tasks.append(loop.create_task(access_log, name="access-log"))
        if not await self.watcher.wait_ready(self.settings.first_routes_timeout_s):
            log.warning(
                "no route table from the control plane at %s yet; serving 404s until one arrives",
                self.settings.control_plane,
            )
        await self._start_grpc()
        await self._start_http()

    async def stop(self) -> None:
        """Stops accepting, lets in-flight requests finish (up to
        drain_timeout_s), then closes replica clients."""
        await self._health.enter_graceful_shutdown()
        async with asyncio.TaskGroup() as tasks:
            if self._grpc is not None:
                tasks.create_task(self._grpc.stop(grace=self.settings.drain_timeout_s))
            if self._uvicorn is not None:
                tasks.create_task(self._stop_http(self._uvicorn))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.router.close()

    def _apply(self, snapshot: Snapshot) -> None:
        # The table is built first: if it is invalid nothing changes. The
        # router learns a deployment before any route can lead to it.
        routes = RouteTable.from_endpoints(snapshot.endpoints)
        self.router.update(snapshot.endpoints, ClusterLinks.from_proto(snapshot.links))
        self.app.routes = routes

    async def _start_grpc(self) -> None:
        server = grpc.aio.server(options=server_options())
        dataplane = DataPlane(self.router, self.observer)
        dataplane_pb2_grpc.add_DataPlaneServiceServicer_to_server(dataplane, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        await self._health.set(_DATAPLANE, health_pb2.HealthCheckResponse.SERVING)
        enable_reflection(server, (_DATAPLANE, health.SERVICE_NAME))
        address = f"{self.settings.grpc_host}:{self.grpc_port}"
        self.grpc_port = listen(server, address, self.settings.tls)
        await server.start()
        self._grpc = server

    async def _start_http(self) -> None:
        config = uvicorn.Config(
            self.app,
            host=self.settings.http_host,
            port=self.http_port,
            loop="none",  # the caller's loop (uvloop in `python -m proxy`)
            http="httptools",
            ws="websockets-sansio",
            lifespan="off",
            access_log=False,
            log_level="warning",
            log_config=None,
            # We are the edge: the replica sees the real peer, plus any
            # X-Forwarded-* headers to interpret as it sees fit.
            proxy_headers=False,
            timeout_graceful_shutdown=int(self.settings.drain_timeout_s),
            **_uvicorn_tls(self.settings),
        )
        config.load()
        server = uvicorn.Server(config)
        # Server.serve() would also capture SIGTERM and re-raise it after
        # exit, cutting our own drain short; so drive its steps directly.
        server.lifespan = config.lifespan_class(config)
        sock = config.bind_socket()
        # Accepted sockets inherit this on Linux. uvloop sets it per
        # connection anyway, plain asyncio does not: without it, a response's
        # head and body writes meet delayed ACKs and stall ~40 ms.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.http_port = sock.getsockname()[1]
        await server.startup(sockets=[sock])
        self._uvicorn = server
        self._http_socket = sock
        self._tasks.append(asyncio.get_running_loop().create_task(server.main_loop()))

    async def _stop_http(self, server: uvicorn.Server) -> None:
        server.should_exit = True
        await server.shutdown(sockets=[self._http_socket])


def _uvicorn_tls(settings: Settings) -> dict[str, object]:
    """uvicorn's options for HTTPS, when a certificate is given."""
    if not settings.tls_cert:
        return {}
    options: dict[str, object] = {
        "ssl_certfile": settings.tls_cert,
        "ssl_keyfile": settings.tls_key,
    }
    if settings.tls_client_ca:
        options |= {"ssl_ca_certs": settings.tls_client_ca, "ssl_cert_reqs": ssl.CERT_REQUIRED}
    return options
