"""One scripted replica: the real replica worker (user code loaded and
constructed in this process, the real ReplicaService) on a loopback port,
whose health, reconfigure and drain follow the world's script first."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from capstan.errors import CapstanError
from capstan.internal.v1 import replica_pb2, replica_pb2_grpc
from capstan.json_values import to_json_text
from executors.base import LaunchSpec, NotSupported, ReplicaRef, ReplicaStartError
from executors.replica.loader import LoadError, load
from executors.replica.server import ReplicaServicer
from executors.replica.worker import Worker

if TYPE_CHECKING:
    from scripted_executor.world import World

# After draining, how long the last responses get to reach callers (as the
# real worker allows) before the server cancels what is left.
_STOP_GRACE_S = 1.0


class ScriptedReplica(ReplicaServicer):
    """Made by `start`; stopped by `shut`. Tests flip `is_healthy`."""

    def __init__(self, world: World, spec: LaunchSpec, worker: Worker) -> None:
        super().__init__(worker)
        self.world = world
        self.worker = worker
        self.config = spec.config
        self.node = spec.node
        self.env = dict(spec.env)
        self.is_healthy = True
        self.address = ""
        self._server: grpc.aio.Server | None = None

    @classmethod
    async def start(cls, world: World, spec: LaunchSpec) -> ScriptedReplica:
        """Loads the user's code, applies its user_config and serves.
        Raises `ReplicaStartError` naming what the user's code did wrong."""
        try:
            worker = Worker(spec.config, load(spec.config))
        except LoadError as error:
            raise ReplicaStartError(str(error)) from error
        if worker.user.asgi_app is not None:
            worker.invoker.close()
            raise NotSupported("the scripted executor does not serve ASGI ingress apps")
        replica = cls(world, spec, worker)
        deployment = spec.config.deployment
        try:
            if deployment.HasField("user_config"):
                await worker.reconfigure(to_json_text(deployment.user_config), None)
        except CapstanError as error:
            worker.invoker.close()
            raise ReplicaStartError(f"{worker.user.name}: {error.message}") from error
        await replica._serve()
        return replica

    async def _serve(self) -> None:
        self._server = grpc.aio.server()
        replica_pb2_grpc.add_ReplicaServiceServicer_to_server(self, self._server)
        port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        self.address = f"127.0.0.1:{port}"

    async def shut(self, timeout_s: float = 0.0) -> None:
        """Stops serving: requests in flight get `timeout_s` to finish, and
        are cancelled past it (the in-process form of a forced stop)."""
        await self.worker.drain(timeout_s)
        self.close_streams()
        if self._server is not None:
            await self._server.stop(_STOP_GRACE_S if timeout_s else 0)
        self.worker.invoker.close()

    def ref(self) -> ReplicaRef:
        return ReplicaRef(self.id, "scripted", self.address, self.node, self.config.nonce)

    @property
    def id(self) -> str:
        return self.config.replica_id

    @property
    def deployment(self) -> str:
        return self.config.deployment.name

    @property
    def version(self) -> str:
        return self.config.version

    @property
    def user_config(self) -> str | None:
        return self.worker.user_config

    @property
    def max_concurrent_queries(self) -> int:
        return self.worker.max_concurrent_queries

    @property
    def is_draining(self) -> bool:
        return self.worker.draining

    # -- the script, ahead of the real worker ----------------------------------

    async def Reconfigure(
        self, request: replica_pb2.ReconfigureRequest, context: grpc.aio.ServicerContext
    ) -> replica_pb2.ReconfigureResponse:
        if request.HasField("user_config") and request.user_config in self.world.rejected_configs:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"reconfigure() raised ValueError: bad config {request.user_config}",
            )
        reply = await super().Reconfigure(request, context)
        self.world.reconfigures.append((self.id, request.user_config))
        return reply

    async def CheckHealth(
        self, request: replica_pb2.CheckHealthRequest, context: grpc.aio.ServicerContext
    ) -> replica_pb2.CheckHealthResponse:
        if not self.is_healthy:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "check_health() raised")
        return await super().CheckHealth(request, context)

    async def Drain(
        self, request: replica_pb2.DrainRequest, context: grpc.aio.ServicerContext
    ) -> replica_pb2.DrainResponse:
        self.world.note_drain(self)
        return await super().Drain(request, context)
