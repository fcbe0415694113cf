"""The control plane through its gRPC API (see tests/support/controlplane_harness):
failed rollouts and rollbacks, dead and unhealthy replicas, placement, and
restarts that adopt or replace the replicas left running."""

from __future__ import annotations

import json

import grpc
import pytest

from capstan.json_values import to_json_text
from capstan.v1 import controlplane_pb2 as cp
from capstan.v1 import deployment_pb2
from executors.base import Node
from tests.support.controlplane_harness import (
    HEALTHY,
    RUNNING,
    Harness,
    all_configured,
    expect_error,
    ids,
    passes,
    state_is,
)
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(60)


# -- failures -----------------------------------------------------------------------


async def test_broken_update_keeps_the_old_version_serving(harness: Harness) -> None:
    old = await harness.apply(num_replicas=2, version="v1")
    harness.world.broken_versions.add("v2")
    details = await expect_error(
        harness.apply(num_replicas=2, version="v2"), grpc.StatusCode.ABORTED
    )
    assert "constructor of v2 raised" in details and "rolled back to version v1" in details
    await passes(harness, 5)
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
    await passes(harness, 5)
    deployment = await harness.get()
    assert deployment.state == cp.DEPLOYMENT_STATE_DEPLOY_FAILED
    assert list(deployment.replicas) == [] and harness.world.running("hello") == []


async def test_rejected_user_config_rolls_back(harness: Harness) -> None:
    good, bad = '{"x":1}', '{"x":"bad"}'  # as the control plane stores them
    old = await harness.apply(num_replicas=2, version="v1", user_config=json.loads(good))
    harness.world.rejected_configs.add(bad)
    details = await expect_error(
        harness.apply(num_replicas=2, version="v1", user_config=json.loads(bad)),
        grpc.StatusCode.ABORTED,
    )
    assert "reconfigure() raised ValueError" in details
    deployment = await eventually(all_configured(harness, good), "replicas back on the old config")
    assert deployment.state == cp.DEPLOYMENT_STATE_DEPLOY_FAILED
    assert to_json_text(deployment.spec.user_config) == good
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
    await eventually(lambda: state_is(harness, HEALTHY), "the pending replica to start")


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
