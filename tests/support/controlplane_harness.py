"""A real control plane on 127.0.0.1:0, driven through its gRPC stub, with
the scripted executor plugin (tests/plugins/scripted): real replica workers
served from this process, following a script the test writes. Shared by the
control plane's integration tests."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import Awaitable, Callable

import grpc
import pytest
from scripted_executor import World

from capstan.json_values import to_value
from capstan.v1 import controlplane_pb2 as cp
from capstan.v1 import controlplane_pb2_grpc, deployment_pb2
from controlplane.server import ControlPlane
from controlplane.settings import Settings

RUNNING = cp.REPLICA_STATE_RUNNING
HEALTHY = cp.DEPLOYMENT_STATE_HEALTHY


class Harness:
    """A control plane on a state dir, over a World that outlives it."""

    def __init__(self, state_dir: pathlib.Path, world: World) -> None:
        self.state_dir = state_dir
        self.world = world
        self.plane: ControlPlane | None = None
        self.channel: grpc.aio.Channel | None = None
        self.stub: controlplane_pb2_grpc.ControlPlaneServiceStub

    async def start(self) -> None:
        settings = Settings(
            state_dir=self.state_dir,
            port=0,
            default_executor="scripted",
            # Loaded by name through the capstan.executors entry points.
            executors={"scripted": {"world": self.world}},
            reconcile_interval_s=0.05,
            backoff_base_s=0.2,
        )
        self.plane = await ControlPlane.start(settings)
        self.channel = grpc.aio.insecure_channel(self.plane.address)
        self.stub = controlplane_pb2_grpc.ControlPlaneServiceStub(self.channel)

    async def stop(self) -> None:
        if self.channel is not None:
            await self.channel.close()
            self.channel = None
        if self.plane is not None:
            await self.plane.stop()
            self.plane = None

    async def apply(self, wait: bool = True, **fields: object) -> cp.Deployment:
        request = cp.ApplyDeploymentRequest(spec=spec(**fields), wait=wait, timeout_s=20)
        reply = await self.stub.ApplyDeployment(request, timeout=30)
        return reply.deployment

    async def get(self, name: str = "hello") -> cp.Deployment:
        reply = await self.stub.GetDeployment(cp.GetDeploymentRequest(name=name), timeout=5)
        return reply.deployment

    async def first_routes(self) -> cp.WatchRoutesResponse:
        stream = self.stub.WatchRoutes(cp.WatchRoutesRequest(), timeout=5)
        try:
            return await stream.read()
        finally:
            stream.cancel()


def spec(**fields: object) -> deployment_pb2.DeploymentSpec:
    msg = deployment_pb2.DeploymentSpec(name="hello", graceful_shutdown_wait_loop_s=0.0)
    msg.code.import_path = "tests.apps.hello:Hello"
    for key, value in fields.items():
        if isinstance(value, deployment_pb2.ReplicaOptions):
            msg.replica_options.CopyFrom(value)
        elif key == "user_config":  # a Python value
            msg.user_config.CopyFrom(to_value(value, key))
        else:
            setattr(msg, key, value)
    return msg


def ids(deployment: cp.Deployment, state: int = RUNNING) -> set[str]:
    return {r.id for r in deployment.replicas if r.state == state}


async def expect_error(call: Awaitable[object], code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    return caught.value.details() or ""


async def state_is(harness: Harness, state: int) -> bool:
    return (await harness.get()).state == state


def all_configured(harness: Harness, config: str) -> Callable[[], Awaitable[cp.Deployment | None]]:
    async def probe() -> cp.Deployment | None:
        replicas = harness.world.running("hello")
        if not replicas or any(r.user_config != config for r in replicas):
            return None
        return await harness.get()

    return probe


async def passes(harness: Harness, count: int) -> None:
    """Waits until the reconciler has run `count` more passes."""
    assert harness.plane is not None
    for _ in range(count):
        async with asyncio.timeout(5):
            await harness.plane.reconciler.next_pass()
