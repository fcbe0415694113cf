"""A scripted executor: a real implementation of `executors.base.Executor`
whose replicas are in-process grpc.aio ReplicaService servers, so the
control plane is driven end to end without starting processes.

A `World` is the pretend machine: it holds the running replicas and outlives
any one executor (and so any one control plane), which is what adoption
tests need. Tests script it (constructors that raise, configs reconfigure()
rejects, health that fails, replicas that die, launches held at a gate) and
read back what happened (launches, stops, drains, how many were starting at
once, how many served while one drained).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import pathlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import grpc

from capstan.v1 import replica_pb2, replica_pb2_grpc
from executors.base import Capabilities, Executor, LaunchSpec, Node, ReplicaRef, ReplicaStartError


class ScriptedReplica(replica_pb2_grpc.ReplicaServiceServicer):
    """A replica worker that runs no user code: it answers each call with its
    own id and version, and fails where the world's script says so."""

    def __init__(self, world: World, config: replica_pb2.ReplicaConfig, node: str) -> None:
        self.world = world
        self.id = config.replica_id
        self.deployment = config.deployment.name
        self.version = config.version
        self.nonce = config.nonce
        self.node = node
        self.env: dict[str, str] = {}
        self.user_config: str | None = (
            config.deployment.user_config if config.deployment.HasField("user_config") else None
        )
        self.max_concurrent_queries = config.deployment.max_concurrent_queries
        self.is_healthy = True
        self.is_draining = False
        self.server: grpc.aio.Server | None = None
        self.address = ""

    async def Exchange(
        self, requests: AsyncIterator[replica_pb2.ExchangeRequest], context: Any
    ) -> AsyncIterator[replica_pb2.ExchangeResponse]:
        body = json.dumps({"replica": self.id, "version": self.version}).encode()
        result = {"encoding": "ENCODING_JSON", "data": body}
        async for message in requests:
            frames = [
                replica_pb2.ResponseFrame(id=frame.id, done=True, result=result)
                for frame in message.frames
                if not frame.cancel
            ]
            yield replica_pb2.ExchangeResponse(frames=frames)

    async def Reconfigure(
        self, request: replica_pb2.ReconfigureRequest, context: grpc.aio.ServicerContext
    ) -> replica_pb2.ReconfigureResponse:
        if request.HasField("user_config"):
            if request.user_config in self.world.rejected_configs:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"reconfigure() raised ValueError: bad config {request.user_config}",
                )
            self.user_config = request.user_config
        self.max_concurrent_queries = request.max_concurrent_queries
        self.world.reconfigures.append((self.id, request.user_config))
        return replica_pb2.ReconfigureResponse()

    async def CheckHealth(
        self, request: replica_pb2.CheckHealthRequest, context: grpc.aio.ServicerContext
    ) -> replica_pb2.CheckHealthResponse:
        if not self.is_healthy:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "check_health() raised")
        return replica_pb2.CheckHealthResponse()

    async def Drain(
        self, request: replica_pb2.DrainRequest, context: grpc.aio.ServicerContext
    ) -> replica_pb2.DrainResponse:
        self.world.note_drain(self)
        self.is_draining = True
        return replica_pb2.DrainResponse(ongoing_requests=0)

    async def GetStats(
        self, request: replica_pb2.GetStatsRequest, context: grpc.aio.ServicerContext
    ) -> replica_pb2.GetStatsResponse:
        return replica_pb2.GetStatsResponse(
            replica_id=self.id,
            deployment=self.deployment,
            version=self.version,
            nonce=self.nonce,
            draining=self.is_draining,
        )

    async def serve(self) -> None:
        self.server = grpc.aio.server()
        replica_pb2_grpc.add_ReplicaServiceServicer_to_server(self, self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        self.address = f"127.0.0.1:{port}"

    async def shut(self) -> None:
        if self.server is not None:
            await self.server.stop(0)

    def ref(self) -> ReplicaRef:
        return ReplicaRef(self.id, "scripted", self.address, self.node, self.nonce)


@dataclasses.dataclass
class World:
    """The pretend machine and the script it follows."""

    nodes: Sequence[Node] = (Node("node0", num_cpus=64),)
    # Versions whose constructor raises: launch fails with ReplicaStartError.
    broken_versions: set[str] = dataclasses.field(default_factory=set)
    # user_config values the replica's reconfigure() rejects.
    rejected_configs: set[str] = dataclasses.field(default_factory=set)
    # When set, launches wait for it before answering.
    launch_gate: asyncio.Event | None = None

    replicas: dict[str, ScriptedReplica] = dataclasses.field(default_factory=dict)
    launches: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    stops: list[str] = dataclasses.field(default_factory=list)
    reconfigures: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    # For each drain: (replica, version, replicas still serving besides it).
    drains: list[tuple[str, str, int]] = dataclasses.field(default_factory=list)
    launching: int = 0
    most_launching: int = 0

    def running(self, deployment: str, version: str | None = None) -> list[ScriptedReplica]:
        return [
            r
            for r in self.replicas.values()
            if r.deployment == deployment and (version is None or r.version == version)
        ]

    def note_drain(self, replica: ScriptedReplica) -> None:
        serving = [
            r for r in self.running(replica.deployment) if r is not replica and not r.is_draining
        ]
        self.drains.append((replica.id, replica.version, len(serving)))

    async def launch(self, spec: LaunchSpec) -> ReplicaRef:
        config = spec.config
        self.launches.append((config.replica_id, config.version))
        self.launching += 1
        self.most_launching = max(self.most_launching, self.launching)
        try:
            if self.launch_gate is not None:
                await self.launch_gate.wait()
            if config.version in self.broken_versions:
                raise ReplicaStartError(f"RuntimeError: constructor of {config.version} raised")
            if config.deployment.user_config in self.rejected_configs:
                raise ReplicaStartError("ValueError: reconfigure() rejected the user_config")
            replica = ScriptedReplica(self, config, spec.node)
            replica.env = dict(spec.env)
            await replica.serve()
        finally:
            self.launching -= 1
        self.replicas[replica.id] = replica
        return replica.ref()

    async def stop(self, replica_id: str) -> None:
        replica = self.replicas.pop(replica_id, None)
        if replica is not None:
            self.stops.append(replica_id)
            await replica.shut()

    async def kill(self, replica_id: str) -> None:
        """The replica dies on its own (not asked to stop)."""
        replica = self.replicas.pop(replica_id)
        await replica.shut()

    async def stray(self, replica_id: str, deployment: str) -> ScriptedReplica:
        """A replica running that no control plane started (or remembers)."""
        config = replica_pb2.ReplicaConfig(replica_id=replica_id, version="v?")
        config.deployment.name = deployment
        replica = ScriptedReplica(self, config, "node0")
        await replica.serve()
        self.replicas[replica_id] = replica
        return replica

    async def close(self) -> None:
        for replica_id in list(self.replicas):
            await self.kill(replica_id)


class ScriptedExecutor(Executor):
    """Runs replicas in the `World` given as config["world"]."""

    name = "scripted"
    capabilities = Capabilities(adopts_replicas=True)

    def __init__(self, config: Mapping[str, Any], state_dir: pathlib.Path) -> None:
        super().__init__(config, state_dir)
        self.world: World = config.get("world") or World()
        self.is_closed = False

    async def capacity(self) -> Sequence[Node]:
        return self.world.nodes

    async def launch(self, spec: LaunchSpec) -> ReplicaRef:
        return await self.world.launch(spec)

    async def stop(self, ref: ReplicaRef, timeout_s: float) -> None:
        await self.world.stop(ref.replica_id)

    async def observe(self) -> Sequence[ReplicaRef]:
        return [replica.ref() for replica in self.world.replicas.values()]

    async def close(self) -> None:
        self.is_closed = True
