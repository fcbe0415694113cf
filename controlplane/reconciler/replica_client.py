"""Calls from the control plane to replica workers (health, drain,
reconfigure, stats), over one channel per replica address, reused across calls."""

from __future__ import annotations

import grpc

from capstan.channels import channel_options
from capstan.v1 import replica_pb2, replica_pb2_grpc


class ReplicaClient:
    """One grpc.aio channel per replica address. Create inside the loop."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, replica_pb2_grpc.ReplicaServiceStub] = {}

    def _stub(self, address: str) -> replica_pb2_grpc.ReplicaServiceStub:
        stub = self._stubs.get(address)
        if stub is None:
            channel = grpc.aio.insecure_channel(address, options=channel_options())
            self._channels[address] = channel
            stub = self._stubs[address] = replica_pb2_grpc.ReplicaServiceStub(channel)
        return stub

    async def check_health(self, address: str, timeout_s: float) -> None:
        """Raises grpc.aio.AioRpcError when the replica is not healthy."""
        await self._stub(address).CheckHealth(replica_pb2.CheckHealthRequest(), timeout=timeout_s)

    async def drain(self, address: str, timeout_s: float) -> int:
        """Asks the replica to take no new requests and waits for in-flight
        ones; returns how many were still running when the wait ended."""
        # The RPC itself may outlive the drain wait by a little.
        reply = await self._stub(address).Drain(
            replica_pb2.DrainRequest(timeout_s=timeout_s), timeout=timeout_s + 5.0
        )
        return reply.ongoing_requests

    async def reconfigure(
        self,
        address: str,
        user_config: str | None,
        max_concurrent_queries: int,
        timeout_s: float,
    ) -> None:
        request = replica_pb2.ReconfigureRequest(max_concurrent_queries=max_concurrent_queries)
        if user_config is not None:
            request.user_config = user_config
        await self._stub(address).Reconfigure(request, timeout=timeout_s)

    async def ongoing_requests(self, address: str, timeout_s: float) -> int:
        """Requests queued and running on the replica now."""
        reply = await self._stub(address).GetStats(replica_pb2.GetStatsRequest(), timeout=timeout_s)
        return reply.ongoing_requests

    async def stats(
        self, address: str, timeout_s: float, with_metrics: bool = False
    ) -> replica_pb2.GetStatsResponse:
        """The replica's identity and load (and, `with_metrics`, its user metrics)."""
        request = replica_pb2.GetStatsRequest(with_metrics=with_metrics)
        return await self._stub(address).GetStats(request, timeout=timeout_s)

    async def forget(self, address: str) -> None:
        """Closes the channel to a replica that is gone."""
        self._stubs.pop(address, None)
        channel = self._channels.pop(address, None)
        if channel is not None:
            await channel.close()

    async def close(self) -> None:
        for address in list(self._channels):
            await self.forget(address)
