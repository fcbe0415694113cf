"""The scripted Executor: runs replicas in the `World` passed as
config["world"] (a fresh one when none is), inside the test process.

Being in-process, it cannot give a replica an interpreter or a folder of
its own: a runtime_env with pip, conda or working_dir is `NotSupported`.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

from executors.base import Capabilities, Executor, LaunchSpec, Node, NotSupported, ReplicaRef
from scripted_executor.world import World


class ScriptedExecutor(Executor):
    """Replicas live in the world, so a new instance on the same world
    adopts them, as a restarted control plane's executor would."""

    name = "scripted"
    capabilities = Capabilities(adopts_replicas=True)

    def __init__(self, config: Mapping[str, Any], state_dir: pathlib.Path) -> None:
        unknown = set(config) - {"world"}
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)}; the scripted executor takes 'world'")
        world = config.get("world") or World()
        if not isinstance(world, World):
            raise ValueError(f"world must be a scripted_executor.World, not {type(world).__name__}")
        super().__init__(config, state_dir)
        self.world = world
        self.is_closed = False

    async def capacity(self) -> Sequence[Node]:
        return self.world.nodes

    async def prepare(self, spec: LaunchSpec) -> None:
        runtime_env = spec.config.deployment.replica_options.runtime_env
        for field in ("pip", "conda", "working_dir"):
            if getattr(runtime_env, field):
                raise NotSupported(
                    f"runtime_env.{field}: the scripted executor runs replicas inside the "
                    "test process, which has one interpreter and one working directory"
                )

    async def launch(self, spec: LaunchSpec) -> ReplicaRef:
        await self.prepare(spec)  # nothing to build; refuses what it cannot run
        return await self.world.launch(spec)

    async def stop(self, ref: ReplicaRef, timeout_s: float) -> None:
        await self.world.stop(ref.replica_id, timeout_s)

    async def observe(self) -> Sequence[ReplicaRef]:
        return [replica.ref() for replica in self.world.replicas.values()]

    async def close(self) -> None:
        self.is_closed = True
