"""The Ray executor against a real local Ray (one head per test session):
replicas are Ray actors that serve ReplicaService over gRPC."""

from __future__ import annotations

import asyncio
import os
import pathlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from capstan.internal.v1 import replica_pb2
from capstan.json_values import arguments_of
from capstan.v1 import deployment_pb2
from executors.base import (
    Executor,
    ExecutorError,
    LaunchSpec,
    NotSupported,
    ReplicaRef,
    ReplicaStartError,
)
from executors.registry import load_executor
from tests.contract.exchange_client import call_once as call
from tests.contract.exchange_client import stats
from tests.contract.specs import launch_spec_of
from tests.support.ray_cluster import RayCluster, make_ray_executor, ray_executor
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(120)

# Small replicas: the test cluster has 4 CPUs on a 2-core machine.
SMALL_CPUS = 0.5


def launch_spec(
    import_path: str,
    *args: Any,
    num_cpus: float = SMALL_CPUS,
    env_vars: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    conda: str = "",
) -> LaunchSpec:
    spec = deployment_pb2.DeploymentSpec(
        name=import_path.rpartition(":")[2].lower(),
        code=deployment_pb2.Code(import_path=import_path),
        init_arguments=arguments_of(args, {}, "init_arguments"),
    )
    spec.replica_options.num_cpus = num_cpus
    spec.replica_options.runtime_env.env_vars.update(env_vars or {})
    spec.replica_options.runtime_env.conda = conda
    config = replica_pb2.ReplicaConfig(
        replica_id=f"{spec.name}-{uuid.uuid4().hex[:8]}",
        nonce=uuid.uuid4().hex,
        version="v1",
        deployment=spec,
        host="127.0.0.1",
    )
    return launch_spec_of(config, env=env)


def is_running(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def replica_ids(executor: Executor) -> set[str]:
    return {ref.replica_id for ref in await executor.observe()}


@pytest.fixture
async def executor(ray_cluster: RayCluster, tmp_path: pathlib.Path) -> AsyncIterator[Executor]:
    async with ray_executor(ray_cluster, tmp_path) as executor:
        yield executor


async def test_capacity_reports_the_clusters_cpus(
    ray_cluster: RayCluster, executor: Executor
) -> None:
    print(f"\nRay head started in {ray_cluster.started_in_s:.1f}s")
    [node] = await executor.capacity()
    assert node.num_cpus == ray_cluster.num_cpus
    assert node.gpu_ids == () and node.is_alive
    assert len(node.name) == 56  # Ray's hex node id


async def test_launched_replica_serves_over_exchange(executor: Executor) -> None:
    spec = launch_spec("tests.apps.ray_echo:Echo", "> ")
    began = time.monotonic()
    ref = await executor.launch(spec)
    print(f"\nactor launch took {time.monotonic() - began:.2f}s")
    assert (ref.replica_id, ref.executor, ref.nonce) == (spec.replica_id, "ray", spec.config.nonce)
    assert ref.address.startswith("127.0.0.1:")
    assert ref.node == (await executor.capacity())[0].name
    assert ref.data["actor_name"] == f"capstan-replica-{spec.replica_id}"
    assert ReplicaRef.from_json(ref.to_json()) == ref
    assert await call(ref, "echo", "hi") == "> hi"
    replica = await stats(ref)
    assert (replica.replica_id, replica.nonce) == (spec.replica_id, spec.config.nonce)
    assert str(replica.pid) == ref.data["pid"] != str(os.getpid())


async def test_environment_reaches_the_replica(executor: Executor) -> None:
    spec = launch_spec(
        "tests.apps.ray_echo:Echo",
        env_vars={"CAPSTAN_FLAVOUR": "plum"},
        env={"OMP_NUM_THREADS": "3", "CUDA_VISIBLE_DEVICES": "7"},
    )
    ref = await executor.launch(spec)
    assert await call(ref, "env", "CAPSTAN_FLAVOUR") == "plum"
    assert await call(ref, "env", "OMP_NUM_THREADS") == "3"
    # Ray assigns GPUs itself; a scheduler's choice does not override it.
    assert await call(ref, "env", "CUDA_VISIBLE_DEVICES") != "7"


async def test_more_than_any_node_has_fails_at_once(executor: Executor) -> None:
    spec = launch_spec("tests.apps.ray_echo:Echo", num_cpus=64)
    async with asyncio.timeout(10):
        with pytest.raises(ExecutorError) as caught:
            await executor.launch(spec)
    message = str(caught.value)
    assert "Ray cannot place replica" in message and "short of CPU" in message, message
    assert "needs {'CPU': 64}" in message, message
    assert spec.replica_id not in await replica_ids(executor)


async def test_busy_cluster_fails_at_the_start_deadline(
    ray_cluster: RayCluster, tmp_path: pathlib.Path
) -> None:
    async with ray_executor(ray_cluster, tmp_path, start_timeout_s=3) as executor:
        big = await executor.launch(launch_spec("tests.apps.ray_echo:Echo", num_cpus=3))
        spec = launch_spec("tests.apps.ray_echo:Echo", num_cpus=2)
        began = time.monotonic()
        with pytest.raises(ExecutorError) as caught:
            await executor.launch(spec)
        assert time.monotonic() - began < 10
        message = str(caught.value)
        assert "within 3s" in message and "short of CPU" in message, message
        assert await replica_ids(executor) == {big.replica_id}


async def test_constructor_error_is_a_replica_start_error(executor: Executor) -> None:
    spec = launch_spec("tests.apps.ray_echo:Broken")
    with pytest.raises(ReplicaStartError, match="Broken refuses to start"):
        await executor.launch(spec)
    assert spec.replica_id not in await replica_ids(executor)


async def test_actor_dying_while_starting_is_named(executor: Executor) -> None:
    spec = launch_spec("tests.apps.ray_echo:Crashing")
    with pytest.raises(ExecutorError, match=r"the Ray actor of replica \S+ died") as caught:
        await executor.launch(spec)
    assert not isinstance(caught.value, ReplicaStartError)
    assert spec.replica_id not in await replica_ids(executor)


async def test_runtime_env_failure_is_named(executor: Executor) -> None:
    spec = launch_spec("tests.apps.ray_echo:Echo", conda="capstan-no-such-env")
    # No conda on this machine: Ray cannot do what the spec asks.
    with pytest.raises(NotSupported, match="runtime_env") as caught:
        await executor.launch(spec)
    assert "Could not find Conda executable" in str(caught.value), caught.value
    assert not caught.value.retryable
    assert spec.replica_id not in await replica_ids(executor)


async def test_stop_is_graceful_and_idempotent(executor: Executor) -> None:
    ref = await executor.launch(launch_spec("tests.apps.ray_echo:Echo"))
    in_flight = asyncio.create_task(call(ref, "sleep", 1.0))
    await eventually(lambda: _ongoing_requests(ref), "the request to be in flight", timeout_s=10)
    await executor.stop(ref, timeout_s=10)
    assert await in_flight == 1.0
    assert ref.replica_id not in await replica_ids(executor)
    pid = int(ref.data["pid"])
    await eventually(lambda: not is_running(pid), "the actor to exit", timeout_s=10)
    await executor.stop(ref, timeout_s=1)


async def _ongoing_requests(ref: ReplicaRef) -> int:
    return (await stats(ref)).ongoing_requests


async def test_a_new_executor_adopts_running_replicas(
    ray_cluster: RayCluster, tmp_path: pathlib.Path
) -> None:
    old = make_ray_executor(ray_cluster, tmp_path)
    ref = await old.launch(launch_spec("tests.apps.ray_echo:Echo", "adopted "))
    await old.close()  # the control plane goes away; the actor stays
    async with ray_executor(ray_cluster, tmp_path) as new:
        [found] = [r for r in await new.observe() if r.replica_id == ref.replica_id]
        assert found == ref
        assert await call(found, "echo", "hi") == "adopted hi"
        await new.stop(ReplicaRef.from_json(found.to_json()), timeout_s=5)
        assert ref.replica_id not in await replica_ids(new)


def test_only_a_ray_started_outside_the_control_plane_adopts(
    ray_cluster: RayCluster, tmp_path: pathlib.Path
) -> None:
    # No connection is made until the first call, so nothing to close.
    assert make_ray_executor(ray_cluster, tmp_path).capabilities.adopts_replicas
    assert not load_executor("ray", {}, tmp_path).capabilities.adopts_replicas


def test_config_errors_name_the_key(ray_cluster: RayCluster, tmp_path: pathlib.Path) -> None:
    for config, key in [
        ({"address": "nowhere"}, "address"),
        ({"address": "auto", "num_cpus": 2}, "num_cpus"),
        ({"namespace": "has space"}, "namespace"),
        ({"start_timeout_s": 0}, "start_timeout_s"),
        ({"adress": "auto"}, "adress"),
    ]:
        with pytest.raises(ValueError, match=key):
            make_ray_executor(ray_cluster, tmp_path, **config)


async def test_ray_client_address_works_too(
    ray_cluster: RayCluster, tmp_path: pathlib.Path
) -> None:
    async with ray_executor(ray_cluster, tmp_path, address=ray_cluster.client_address) as executor:
        ref = await executor.launch(launch_spec("tests.apps.ray_echo:Echo", "client "))
        assert await call(ref, "echo", "hi") == "client hi"
        assert {r.replica_id for r in await executor.observe()} == {ref.replica_id}
        await executor.stop(ref, timeout_s=5)


async def test_read_log_follows_the_actors_output(executor: Executor) -> None:
    ref = await executor.launch(launch_spec("tests.apps.ray_echo:Echo"))
    following = executor.read_log(ref, since_s=0, follow=True)
    await call(ref, "say", "printed in a Ray actor")
    async with asyncio.timeout(30):
        async for line in following:
            if "printed in a Ray actor" in line:
                break
    await following.aclose()
    # Asked by id alone (as for a replica the store no longer lists).
    by_id = ReplicaRef(ref.replica_id, "ray", address="")
    lines = [line async for line in executor.read_log(by_id, since_s=0, follow=False)]
    assert "printed in a Ray actor" in lines
    await executor.stop(ref, timeout_s=10)
