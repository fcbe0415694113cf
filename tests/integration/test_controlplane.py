"""The control plane through its gRPC API (see tests/support/controlplane_harness):
applying, routes, in-place updates, preconditions and conflicts, deleting
and shutting down. Failures and restarts: test_controlplane_recovery.py."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from capstan.v1 import controlplane_pb2 as cp
from capstan.v1 import deployment_pb2
from tests.support.controlplane_harness import (
    HEALTHY,
    Harness,
    expect_error,
    ids,
    passes,
    state_is,
)
from tests.support.reflection import reflected_methods, reflected_services
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(60)


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
    before = await harness.apply(num_replicas=2, version="v1", user_config={"x": 1})
    after = await harness.apply(
        num_replicas=3, version="v1", user_config={"x": 2}, max_concurrent_queries=7
    )
    assert ids(before) < ids(after) and len(ids(after)) == 3
    assert len(harness.world.launches) == 3 and harness.world.stops == []
    for replica in harness.world.running("hello"):
        assert (replica.user_config, replica.max_concurrent_queries) == ('{"x":2}', 7)
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
    await passes(harness, 5)
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
    await eventually(lambda: state_is(harness, HEALTHY), "the kept deployment to run again")
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
