"""A real control plane on 127.0.0.1:0, driven through its gRPC stub, with
the scripted executor plugin (tests/plugins/scripted): real replica workers
served from this process, following a script the test writes."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from scripted_executor import World

from capstan.v1 import controlplane_pb2 as cp
from capstan.v1 import controlplane_pb2_grpc, deployment_pb2
from controlplane.server import ControlPlane
from controlplane.settings import Settings
from executors.base import Node
from tests.support.reflection import reflected_methods, reflected_services
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(60)

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
        else:
            setattr(msg, key, value)
    return msg


@pytest.fixture
async def harness(tmp_path: pathlib.Path) -> AsyncIterator[Harness]:
    world = World()
    running = Harness(tmp_path / "state", world)
    await running.start()
    yield running
    await running.stop()
    await world.close()


def ids(deployment: cp.Deployment, state: int = RUNNING) -> set[str]:
    return {r.id for r in deployment.replicas if r.state == state}


async def expect_error(call: Awaitable[object], code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    return caught.value.details() or ""


# -- apply, routes, in-place updates ---------------------------------------------


async def test_apply_launches_replicas_and_publishes_routes(harness: Harness) -> None:
    deployment = await harness.apply(num_replicas=2, version="v1")
    assert deployment.state == HEALTHY and deployment.version == "v1"
    assert len(ids(deployment)) == 2
    routes = await harness.first_routes()
    [endpoint] = routes.endpoints
    assert (endpoint.name, endpoint.route_prefix) == ("hello", "/hello")
    world_addresses = {r.address for r in harness.world.running("hello")}
    assert {r.address for r in endpoint.replicas} == world_addresses
    assert {r.address for r in deployment.replicas} == world_addresses


async def test_route_table_streams_changes(harness: Harness) -> None:
    stream = harness.stub.WatchRoutes(cp.WatchRoutesRequest(), timeout=20)
    try:
        first = await stream.read()
        assert list(first.endpoints) == []
        await harness.apply(num_replicas=1, wait=False)
        while True:
            snapshot = await stream.read()
            assert snapshot.revision > first.revision
            if snapshot.endpoints and snapshot.endpoints[0].replicas:
                break
    finally:
        stream.cancel()


async def test_same_version_applies_in_place(harness: Harness) -> None:
    before = await harness.apply(num_replicas=2, version="v1", user_config='{"x": 1}')
    after = await harness.apply(
        num_replicas=3, version="v1", user_config='{"x": 2}', max_concurrent_queries=7
    )
    assert ids(before) < ids(after) and len(ids(after)) == 3
    assert len(harness.world.launches) == 3 and harness.world.stops == []
    for replica in harness.world.running("hello"):
        assert (replica.user_config, replica.max_concurrent_queries) == ('{"x": 2}', 7)
    [endpoint] = (await harness.first_routes()).endpoints
    assert endpoint.max_concurrent_queries == 7


async def test_unversioned_applies_roll_every_time(harness: Harness) -> None:
    first = await harness.apply()
    second = await harness.apply()
    assert first.version and second.version and first.version != second.version
    assert ids(first).isdisjoint(ids(second))


@pytest.mark.parametrize("replicas", [1, 5])
async def test_new_version_rolls_surge_first(harness: Harness, replicas: int) -> None:
    await harness.apply(num_replicas=replicas, version="v1")
    deployment = await harness.apply(num_replicas=replicas, version="v2")
    assert deployment.state == HEALTHY and deployment.version == "v2"
    assert {r.version for r in deployment.replicas} == {"v2"}
    world = harness.world
    assert {r.version for r in world.running("hello")} == {"v2"}
    # 20% (at least one) at a time, and every old replica was drained only
    # while `replicas` others still served.
    assert world.most_launching <= max(1, replicas // 5)
    old_drains = [d for d in world.drains if d[1] == "v1"]
    assert len(old_drains) == replicas
    assert all(serving >= replicas for _, _, serving in old_drains), old_drains


async def test_rollout_is_paced_by_the_slowest_start(harness: Harness) -> None:
    await harness.apply(num_replicas=5, version="v1")
    harness.world.launch_gate = gate = asyncio.Event()
    harness.world.most_launching = 0
    await harness.apply(num_replicas=5, version="v2", wait=False)
    await eventually(lambda: harness.world.launching == 1, "one launch in flight")
    # While it is held, no second new replica starts and no old one stops.
    await _passes(harness, 5)
    assert harness.world.launching == 1 and harness.world.stops == []
    gate.set()
    await eventually(
        lambda: {r.version for r in harness.world.running("hello")} == {"v2"},
        "the rollout to finish",
    )
    assert harness.world.most_launching == 1


# -- preconditions and conflicts ---------------------------------------------------


async def test_prev_version_mismatch_changes_nothing(harness: Harness) -> None:
    await harness.apply(version="v1")
    details = await expect_error(
        harness.apply(version="v2", prev_version="v0"), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert 'prev_version "v0"' in details and '"v1"' in details
    assert (await harness.get()).version == "v1"
    assert (await harness.apply(version="v2", prev_version="v1")).version == "v2"


async def test_route_prefix_conflict_names_the_holder(harness: Harness) -> None:
    await harness.apply(route_prefix="/api")
    details = await expect_error(
        harness.apply(name="other", route_prefix="/api"), grpc.StatusCode.ALREADY_EXISTS
    )
    assert '"/api" is already used by deployment "hello"' in details


async def test_invalid_specs_name_the_field(harness: Harness) -> None:
    details = await expect_error(
        harness.apply(route_prefix="api"), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert details == 'route_prefix "api" must start with "/"'
    details = await expect_error(harness.apply(executor="ray"), grpc.StatusCode.INVALID_ARGUMENT)
    assert "executor 'ray' is not configured" in details and "scripted" in details


async def test_runtime_env_the_executor_lacks_is_refused_at_apply(harness: Harness) -> None:
    # The scripted executor declares no runtime_env abilities.
    options = deployment_pb2.ReplicaOptions(runtime_env=deployment_pb2.RuntimeEnv(pip=["idna"]))
    details = await expect_error(
        harness.apply(replica_options=options), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert details == (
        "executor 'scripted' does not support runtime_env.pip; remove it or choose another executor"
    )
    await expect_error(harness.get(), grpc.StatusCode.NOT_FOUND)


async def test_unknown_deployment_is_not_found(harness: Harness) -> None:
    await expect_error(harness.get("nope"), grpc.StatusCode.NOT_FOUND)
    await expect_error(
        harness.stub.DeleteDeployment(cp.DeleteDeploymentRequest(name="nope")),
        grpc.StatusCode.NOT_FOUND,
    )


# -- delete and shutdown ----------------------------------------------------------


async def test_delete_stops_replicas_and_route(harness: Harness) -> None:
    await harness.apply(num_replicas=2)
    await harness.stub.DeleteDeployment(cp.DeleteDeploymentRequest(name="hello", wait=True))
    assert harness.world.running("hello") == []
    assert len(harness.world.stops) == 2
    await expect_error(harness.get(), grpc.StatusCode.NOT_FOUND)
    assert list((await harness.first_routes()).endpoints) == []
    listed = await harness.stub.ListDeployments(cp.ListDeploymentsRequest())
    assert list(listed.deployments) == []


async def test_shutdown_stops_every_replica(harness: Harness) -> None:
    await harness.apply(num_replicas=2)
    await harness.apply(name="other", num_replicas=1)
    await harness.stub.Shutdown(cp.ShutdownRequest(), timeout=30)
    assert harness.world.replicas == {}
    assert harness.plane is not None and harness.plane.stopped.is_set()
    await harness.start()  # as Ray Serve's shutdown: the deployments are gone
    reply = await harness.stub.ListDeployments(cp.ListDeploymentsRequest())
    assert list(reply.deployments) == []


async def test_shutdown_keeping_deployments_brings_them_back(harness: Harness) -> None:
    await harness.apply(num_replicas=2, version="v1")
    await harness.stub.Shutdown(cp.ShutdownRequest(keep_deployments=True), timeout=30)
    assert harness.world.replicas == {}
    await harness.start()
    await eventually(lambda: _state_is(harness, HEALTHY), "the kept deployment to run again")
    assert len(ids(await harness.get())) == 2


async def test_health_and_reflection_are_served(harness: Harness) -> None:
    assert harness.channel is not None
    health = health_pb2_grpc.HealthStub(harness.channel)
    reply = await health.Check(
        health_pb2.HealthCheckRequest(service="capstan.v1.ControlPlaneService")
    )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    service = "capstan.v1.ControlPlaneService"
    assert {service, "grpc.health.v1.Health"} <= await reflected_services(harness.channel)
    assert {service, "grpc.health.v1.Health"} <= await reflected_services(harness.channel, "v1")
    assert {"ApplyDeployment", "WatchRoutes"} <= await reflected_methods(harness.channel, service)


# -- failures -----------------------------------------------------------------------


async def test_broken_update_keeps_the_old_version_serving(harness: Harness) -> None:
    old = await harness.apply(num_replicas=2, version="v1")
    harness.world.broken_versions.add("v2")
    details = await expect_error(
        harness.apply(num_replicas=2, version="v2"), grpc.StatusCode.ABORTED
    )
    assert "constructor of v2 raised" in details and "rolled back to version v1" in details
    await _passes(harness, 5)
    deployment = await harness.get()
    assert deployment.state == cp.DEPLOYMENT_STATE_DEPLOY_FAILED
    assert "constructor of v2 raised" in deployment.message
    assert deployment.version == "v1" and ids(deployment) == ids(old)
    # No crash loop: the broken version was tried once.
    assert [v for _, v in harness.world.launches].count("v2") == 1
    [endpoint] = (await harness.first_routes()).endpoints
    assert {r.id for r in endpoint.replicas} == ids(old)
    # A fixed version rolls out normally afterwards.
    assert (await harness.apply(num_replicas=2, version="v3")).state == HEALTHY


async def test_broken_new_deployment_fails_with_no_replicas(harness: Harness) -> None:
    harness.world.broken_versions.add("v1")
    details = await expect_error(
        harness.apply(num_replicas=3, version="v1"), grpc.StatusCode.ABORTED
    )
    assert "constructor of v1 raised" in details
    await _passes(harness, 5)
    deployment = await harness.get()
    assert deployment.state == cp.DEPLOYMENT_STATE_DEPLOY_FAILED
    assert list(deployment.replicas) == [] and harness.world.running("hello") == []


async def test_rejected_user_config_rolls_back(harness: Harness) -> None:
    good, bad = '{"x": 1}', '{"x": "bad"}'
    old = await harness.apply(num_replicas=2, version="v1", user_config=good)
    harness.world.rejected_configs.add(bad)
    details = await expect_error(
        harness.apply(num_replicas=2, version="v1", user_config=bad), grpc.StatusCode.ABORTED
    )
    assert "reconfigure() raised ValueError" in details
    deployment = await eventually(_all_configured(harness, good), "replicas back on the old config")
    assert deployment.state == cp.DEPLOYMENT_STATE_DEPLOY_FAILED
    assert deployment.spec.user_config == good
    assert ids(deployment) == ids(old) and harness.world.stops == []


async def test_dead_replica_is_replaced(harness: Harness) -> None:
    before = await harness.apply(num_replicas=2)
    victim = sorted(ids(before))[0]
    await harness.world.kill(victim)

    async def replaced() -> bool:
        now = await harness.get()
        return now.state == HEALTHY and victim not in ids(now) and len(ids(now)) == 2

    await eventually(replaced, "a replacement replica")


async def test_unhealthy_replica_is_replaced(harness: Harness) -> None:
    before = await harness.apply(num_replicas=2, health_check_period_s=0.05)
    victim = sorted(ids(before))[0]
    harness.world.replicas[victim].is_healthy = False

    async def replaced() -> bool:
        now = await harness.get()
        return victim not in ids(now) and len(ids(now)) == 2 and now.state == HEALTHY

    await eventually(replaced, "the unhealthy replica to be replaced")
    assert victim in harness.world.stops


async def test_replica_that_fits_nowhere_is_pending_with_a_reason(harness: Harness) -> None:
    harness.world.nodes = (Node("node0", num_cpus=1),)
    await harness.apply(num_replicas=2, wait=False)

    async def pending() -> cp.Deployment | None:
        now = await harness.get()
        states = sorted(r.state for r in now.replicas)
        is_shown = "pending: needs 1 CPU" in now.message
        return now if is_shown and states == [cp.REPLICA_STATE_PENDING, RUNNING] else None

    deployment = await eventually(pending, "one replica running, one pending")
    [waiting] = [r for r in deployment.replicas if r.state == cp.REPLICA_STATE_PENDING]
    assert waiting.message == "needs 1 CPU, node0 has 0 free"
    assert deployment.state == cp.DEPLOYMENT_STATE_UPDATING
    assert "needs 1 CPU, node0 has 0 free" in deployment.message
    harness.world.nodes = (Node("node0", num_cpus=2),)
    await eventually(lambda: _state_is(harness, HEALTHY), "the pending replica to start")


async def test_placement_env_reaches_the_executor(harness: Harness) -> None:
    harness.world.nodes = (Node("gpu0", num_cpus=8, gpu_ids=("0", "1")),)
    options = deployment_pb2.ReplicaOptions(num_cpus=2, num_gpus=0.5)
    await harness.apply(num_replicas=2, replica_options=options)
    envs = [r.env for r in harness.world.running("hello")]
    assert envs == [{"OMP_NUM_THREADS": "2", "CUDA_VISIBLE_DEVICES": "0"}] * 2


# -- restart and adoption -----------------------------------------------------------


async def test_restart_adopts_running_replicas(harness: Harness) -> None:
    before = await harness.apply(num_replicas=2, version="v1")
    launches = list(harness.world.launches)
    await harness.stop()
    stray = await harness.world.stray("hello-stray", "hello")
    await harness.start()
    # Routes are whole from the first message: adoption precedes serving.
    [endpoint] = (await harness.first_routes()).endpoints
    assert {r.id for r in endpoint.replicas} == ids(before)
    after = await harness.get()
    assert ids(after) == ids(before) and after.state == HEALTHY
    assert harness.world.launches == launches
    await eventually(lambda: stray.id in harness.world.stops, "the stray to be stopped")
    # The adopted replicas are managed as before: a new version rolls them.
    assert (await harness.apply(num_replicas=2, version="v2")).state == HEALTHY


async def test_restart_replaces_replicas_that_died_meanwhile(harness: Harness) -> None:
    before = await harness.apply(num_replicas=2)
    await harness.stop()
    victim = sorted(ids(before))[0]
    await harness.world.kill(victim)
    await harness.start()

    async def replaced() -> bool:
        now = await harness.get()
        return now.state == HEALTHY and victim not in ids(now) and len(ids(now)) == 2

    await eventually(replaced, "the dead replica to be replaced")


# -- helpers ------------------------------------------------------------------------


async def _state_is(harness: Harness, state: int) -> bool:
    return (await harness.get()).state == state


def _all_configured(harness: Harness, config: str) -> Callable[[], Awaitable[cp.Deployment | None]]:
    async def probe() -> cp.Deployment | None:
        replicas = harness.world.running("hello")
        if not replicas or any(r.user_config != config for r in replicas):
            return None
        return await harness.get()

    return probe


async def _passes(harness: Harness, count: int) -> None:
    """Waits until the reconciler has run `count` more passes."""
    assert harness.plane is not None
    for _ in range(count):
        async with asyncio.timeout(5):
            await harness.plane.reconciler.next_pass()
