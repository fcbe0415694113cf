"""Calls from the control plane to replica workers (health, drain,
reconfigure, stats, describe), over one channel per replica, reused across calls.
Every call carries the cluster secret; a replica that serves TLS is reached
over TLS and checked against the cluster CA."""

from __future__ import annotations

import grpc

from capstan.channels import channel_options
from capstan.internal.v1 import replica_pb2, replica_pb2_grpc
from capstan.links import ClusterLinks
from executors.base import ReplicaRef


class ReplicaClient:
    """One grpc.aio channel per replica address. Create inside the loop."""

    def __init__(self, links: ClusterLinks) -> None:
        self._links = links
        self._metadata = links.metadata
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, replica_pb2_grpc.ReplicaServiceStub] = {}

    def _stub(self, ref: ReplicaRef) -> replica_pb2_grpc.ReplicaServiceStub:
        stub = self._stubs.get(ref.address)
        if stub is None:
            channel = self._links.channel(ref.address, tls=ref.tls, options=channel_options())
            self._channels[ref.address] = channel
            stub = self._stubs[ref.address] = replica_pb2_grpc.ReplicaServiceStub(channel)
        return stub

    async def check_health(self, ref: ReplicaRef, timeout_s: float) -> None:
        """Raises grpc.aio.AioRpcError when the replica is not healthy."""
        await self._stub(ref).CheckHealth(
            replica_pb2.CheckHealthRequest(), timeout=timeout_s, metadata=self._metadata
        )

    async def drain(self, ref: ReplicaRef, timeout_s: float) -> int:
        """Asks the replica to take no new requests and waits for in-flight
        ones; returns how many were still running when the wait ended."""
        # The RPC itself may outlive the drain wait by a little.
        reply = await self._stub(ref).Drain(
            replica_pb2.DrainRequest(timeout_s=timeout_s),
            timeout=timeout_s + 5.0,
            metadata=self._metadata,
        )
        return reply.ongoing_requests

    async def reconfigure(
        self,
        ref: ReplicaRef,
        user_config: str | None,
        max_concurrent_queries: int,
        timeout_s: float,
    ) -> None:
        request = replica_pb2.ReconfigureRequest(max_concurrent_queries=max_concurrent_queries)
        if user_config is not None:
            request.user_config = user_config
        await self._stub(ref).Reconfigure(request, timeout=timeout_s, metadata=self._metadata)

    async def ongoing_requests(self, ref: ReplicaRef, timeout_s: float) -> int:
        """Requests queued and running on the replica now."""
        reply = await self._stub(ref).GetStats(
            replica_pb2.GetStatsRequest(), timeout=timeout_s, metadata=self._metadata
        )
        return reply.ongoing_requests

    async def stats(
        self, ref: ReplicaRef, timeout_s: float, with_metrics: bool = False
    ) -> replica_pb2.GetStatsResponse:
        """The replica's identity and load (and, `with_metrics`, its user metrics)."""
        request = replica_pb2.GetStatsRequest(with_metrics=with_metrics)
        return await self._stub(ref).GetStats(request, timeout=timeout_s, metadata=self._metadata)

    async def describe(self, ref: ReplicaRef, timeout_s: float) -> replica_pb2.DescribeResponse:
        """The methods the replica's loaded code answers."""
        request = replica_pb2.DescribeRequest()
        return await self._stub(ref).Describe(request, timeout=timeout_s, metadata=self._metadata)

    async def forget(self, address: str) -> None:
        """Closes the channel to a replica that is gone."""
        self._stubs.pop(address, None)
        channel = self._channels.pop(address, None)
        if channel is not None:
            await channel.close()

    async def close(self) -> None:
        for address in list(self._channels):
            await self.forget(address)
