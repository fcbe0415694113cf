"""The pretend machine the scripted executor runs replicas on, and the
script it follows.

A `World` holds the running replicas and outlives any one executor (and so
any one control plane), which is what adoption tests need. Tests script it
(versions whose constructor raises, configs reconfigure() rejects, launches
held at a gate, replicas that die) and read back what happened (launches,
stops, drains, how many were starting at once, how many served while one
drained).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

from capstan.internal.v1 import replica_pb2
from capstan.json_values import to_json_text
from capstan.v1 import deployment_pb2
from executors.base import LaunchSpec, Node, ReplicaRef, ReplicaStartError
from executors.options import ReplicaOptions
from scripted_executor.replica import ScriptedReplica

# What a replica nobody launched (`stray`) runs.
STRAY_APP = "tests.apps.hello:Hello"


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
            user_config = config.deployment.user_config
            if user_config.ByteSize() and to_json_text(user_config) in self.rejected_configs:
                raise ReplicaStartError("ValueError: reconfigure() rejected the user_config")
            replica = await ScriptedReplica.start(self, spec)
        finally:
            self.launching -= 1
        self.replicas[replica.id] = replica
        return replica.ref()

    async def stop(self, replica_id: str, timeout_s: float) -> None:
        replica = self.replicas.pop(replica_id, None)
        if replica is not None:
            self.stops.append(replica_id)
            await replica.shut(timeout_s)

    async def kill(self, replica_id: str) -> None:
        """The replica dies on its own (not asked to stop)."""
        replica = self.replicas.pop(replica_id)
        await replica.shut()

    async def stray(self, replica_id: str, deployment: str) -> ScriptedReplica:
        """A replica running that no control plane started (or remembers)."""
        spec = deployment_pb2.DeploymentSpec(
            name=deployment, code=deployment_pb2.Code(import_path=STRAY_APP)
        )
        config = replica_pb2.ReplicaConfig(replica_id=replica_id, version="v?", deployment=spec)
        options = ReplicaOptions.from_proto(spec.replica_options)
        replica = await ScriptedReplica.start(self, LaunchSpec(config, options, node="node0"))
        self.replicas[replica_id] = replica
        return replica

    async def close(self) -> None:
        for replica_id in list(self.replicas):
            await self.kill(replica_id)
