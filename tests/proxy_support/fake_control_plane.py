"""A small, real ControlPlaneService that implements only WatchRoutes and
pushes route tables when a test publishes them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import grpc

from capstan.v1 import controlplane_pb2, controlplane_pb2_grpc
from tests.proxy_support import loopback


def endpoint(
    name: str,
    route_prefix: str,
    replicas: Sequence[tuple[str, str]],
    *,
    max_concurrent_queries: int = 100,
    max_queued_requests: int = 1000,
) -> controlplane_pb2.Endpoint:
    """An Endpoint message; `replicas` are (id, address) pairs."""
    return controlplane_pb2.Endpoint(
        name=name,
        route_prefix=route_prefix,
        max_concurrent_queries=max_concurrent_queries,
        max_queued_requests=max_queued_requests,
        replicas=[controlplane_pb2.RouteReplica(id=i, address=a) for i, a in replicas],
    )


class FakeControlPlane(controlplane_pb2_grpc.ControlPlaneServiceServicer):
    """Streams the current table to every watcher, then each published one."""

    def __init__(self, revision: int = 0) -> None:
        self.revision = revision
        self.endpoints: list[controlplane_pb2.Endpoint] = []
        self.watchers = 0
        self._changed = asyncio.Event()

    def publish(self, endpoints: Sequence[controlplane_pb2.Endpoint]) -> int:
        """Replaces the table; returns its revision."""
        self.revision += 1
        self.endpoints = list(endpoints)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return self.revision

    async def WatchRoutes(
        self, request: controlplane_pb2.WatchRoutesRequest, context: object
    ) -> AsyncIterator[controlplane_pb2.WatchRoutesResponse]:
        self.watchers += 1
        try:
            while True:
                changed = self._changed
                yield controlplane_pb2.WatchRoutesResponse(
                    revision=self.revision, endpoints=self.endpoints
                )
                await changed.wait()
        finally:
            self.watchers -= 1


async def serve(control_plane: FakeControlPlane, port: int = 0) -> tuple[grpc.aio.Server, int]:
    """A started grpc.aio server for `control_plane` on 127.0.0.1 and its port."""
    add = controlplane_pb2_grpc.add_ControlPlaneServiceServicer_to_server
    return await loopback.serve(add, control_plane, port)
