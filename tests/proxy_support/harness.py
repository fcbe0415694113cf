"""Starting and stopping the real servers proxy tests need."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc

from capstan.v1 import controlplane_pb2
from proxy.server import ProxyServer, Settings
from tests.proxy_support import fake_control_plane, fake_replica
from tests.support.waiting import eventually


class FakeCluster:
    """A fake control plane and fake replicas, all real gRPC servers."""

    def __init__(self) -> None:
        self.control_plane = fake_control_plane.FakeControlPlane()
        self.control_plane_address = ""
        self._servers: dict[str, grpc.aio.Server] = {}
        self._control_plane_server = None

    async def start(self) -> None:
        server, port = await fake_control_plane.serve(self.control_plane)
        self._control_plane_server = server
        self.control_plane_address = f"127.0.0.1:{port}"

    async def stop_control_plane(self) -> None:
        if self._control_plane_server is not None:
            await self._control_plane_server.stop(0)
            self._control_plane_server = None

    async def replica(self, name: str, **options: int) -> tuple[fake_replica.FakeReplica, str]:
        """A started fake replica and its address."""
        replica = fake_replica.FakeReplica(name, **options)
        server, port = await fake_replica.serve(replica)
        address = f"127.0.0.1:{port}"
        self._servers[address] = server
        return replica, address

    async def stop_replica(self, address: str) -> None:
        """Stops a replica's server at once, as if its process died."""
        await self._servers.pop(address).stop(0)

    def publish(self, *endpoints: controlplane_pb2.Endpoint) -> int:
        return self.control_plane.publish(endpoints)

    async def close(self) -> None:
        await self.stop_control_plane()
        await asyncio.gather(*(server.stop(0) for server in self._servers.values()))


@contextlib.asynccontextmanager
async def fake_cluster() -> AsyncIterator[FakeCluster]:
    running = FakeCluster()
    await running.start()
    try:
        yield running
    finally:
        await running.close()


@contextlib.asynccontextmanager
async def proxy(cluster: FakeCluster, **settings: object) -> AsyncIterator[ProxyServer]:
    """The real proxy (uvicorn + DataPlane + watcher) on ports chosen by the OS."""
    options: dict = {"http_port": 0, "grpc_port": 0, "drain_timeout_s": 2.0}
    options.update(settings)
    async with ProxyServer(
        Settings(control_plane=cluster.control_plane_address, **options)
    ) as server:
        yield server


async def sync_routes(server: ProxyServer, revision: int) -> None:
    """Waits until the proxy has applied route table `revision`."""
    await eventually(
        lambda: (server.watcher.revision or 0) >= revision, f"route table {revision}", timeout_s=5
    )
