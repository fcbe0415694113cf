"""The ssh executor against real OpenSSH servers on loopback (tests/support/sshd.py):
two hosts, replicas started over SSH, served over ReplicaService, stopped,
adopted by a new executor instance, and hosts taken down and brought back."""

from __future__ import annotations

import asyncio
import os
import pathlib
import re
import signal
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from capstan.internal.v1 import replica_pb2
from capstan.json_values import arguments_of
from capstan.v1 import deployment_pb2
from executors.base import (
    ExecutorError,
    LaunchSpec,
    NotSupported,
    ReplicaRef,
    ReplicaStartError,
)
from executors.ssh import SshExecutor
from tests.contract.exchange_client import call_once as call
from tests.contract.exchange_client import stats
from tests.contract.specs import launch_spec_of
from tests.support.sshd import SshHosts, open_ssh_executor, worker_pids
from tests.support.waiting import eventually


def launch_spec(
    attribute: str = "Echo",
    *,
    node: str = "",
    init_args: list[Any] | None = None,
    env_vars: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    working_dir: str = "",
) -> LaunchSpec:
    import_path = attribute if ":" in attribute else f"tests.apps.ssh_echo:{attribute}"
    deployment = deployment_pb2.DeploymentSpec(
        name="echo",
        code=deployment_pb2.Code(import_path=import_path),
        init_arguments=arguments_of(init_args or [], {}, "init_arguments"),
        replica_options=deployment_pb2.ReplicaOptions(
            runtime_env=deployment_pb2.RuntimeEnv(env_vars=env_vars or {}, working_dir=working_dir)
        ),
    )
    config = replica_pb2.ReplicaConfig(
        replica_id=f"echo-{uuid.uuid4().hex[:12]}",
        nonce=uuid.uuid4().hex,
        version="v1",
        deployment=deployment,
    )
    return launch_spec_of(config, node=node, env=env)


def workdir(state_dir: pathlib.Path, host: str) -> pathlib.Path:
    return state_dir / "hosts" / host


@pytest.fixture
async def executor(ssh_hosts: SshHosts, tmp_path: pathlib.Path) -> AsyncIterator[SshExecutor]:
    async with open_ssh_executor(ssh_hosts, tmp_path) as executor:
        yield executor


async def test_capacity_lists_both_hosts(executor: SshExecutor) -> None:
    nodes = await executor.capacity()
    assert [(n.name, n.num_cpus, n.is_alive) for n in nodes] == [("a", 4, True), ("b", 4, True)]
    assert nodes[1].resources == {"host_b": 1}


async def test_launch_on_the_named_host_serves_requests(
    executor: SshExecutor, tmp_path: pathlib.Path
) -> None:
    spec = launch_spec(
        node="b",
        init_args=["b says "],
        env_vars={"FROM_RUNTIME": "1"},
        env={"OMP_NUM_THREADS": "3"},
    )
    ref = await executor.launch(spec)
    assert (ref.executor, ref.node, ref.data["host"]) == ("ssh", "b", "b")
    assert ref.address.startswith("127.0.0.2:") and ref.nonce == spec.config.nonce
    answer = await call(ref, "echo", "hi")
    assert answer["text"] == "b says hi" and answer["pid"] == int(ref.data["pid"])
    assert answer["cwd"] == str(workdir(tmp_path, "b"))
    assert await call(ref, "env", "FROM_RUNTIME") == "1"
    assert await call(ref, "env", "OMP_NUM_THREADS") == "3"
    await executor.stop(ref, timeout_s=10)
    replicas = workdir(tmp_path, "b") / "replicas"
    assert list(replicas.iterdir()) == []
    assert (workdir(tmp_path, "b") / "logs" / f"{ref.replica_id}.log").exists()


async def test_launch_without_a_node_picks_the_first_reachable_host(
    executor: SshExecutor,
) -> None:
    ref = await executor.launch(launch_spec())
    assert ref.node == "a" and ref.address.startswith("127.0.0.1:")
    await executor.stop(ref, timeout_s=10)


async def test_concurrent_launches_share_one_connection(executor: SshExecutor) -> None:
    async with asyncio.TaskGroup() as group:
        launches = [group.create_task(executor.launch(launch_spec(node="a"))) for _ in range(3)]
    refs = [task.result() for task in launches]
    assert len({ref.address for ref in refs}) == 3
    assert sorted(r.replica_id for r in await executor.observe()) == sorted(
        r.replica_id for r in refs
    )
    async with asyncio.TaskGroup() as group:
        for ref in refs:
            group.create_task(executor.stop(ref, timeout_s=10))


async def test_working_dir_is_shipped_and_unpacked_per_replica(
    executor: SshExecutor, tmp_path: pathlib.Path
) -> None:
    app = tmp_path / "app"
    (app / "data").mkdir(parents=True)
    (app / "shipped.py").write_text(
        "import pathlib\n"
        "class Reader:\n"
        "    def read(self):\n"
        "        return pathlib.Path('data/greeting.txt').read_text()\n"
    )
    (app / "data" / "greeting.txt").write_text("shipped over sftp")
    spec = launch_spec("shipped:Reader", node="b", working_dir=str(app))
    ref = await executor.launch(spec)
    assert await call(ref, "read") == "shipped over sftp"
    unpacked = workdir(tmp_path, "b") / "working_dirs" / ref.replica_id
    assert (unpacked / "shipped.py").exists()
    await executor.stop(ref, timeout_s=10)
    assert not unpacked.exists()
    assert len(list((workdir(tmp_path, "b") / "archives").iterdir())) == 1


async def test_user_code_failure_is_a_replica_start_error(
    executor: SshExecutor, tmp_path: pathlib.Path
) -> None:
    with pytest.raises(ReplicaStartError, match="Broken refuses to start") as caught:
        await executor.launch(launch_spec("Broken", node="a"))
    assert not caught.value.retryable
    assert list((workdir(tmp_path, "a") / "replicas").iterdir()) == []
    assert worker_pids(tmp_path) == []


async def test_a_variable_a_shell_cannot_assign_is_not_supported(
    executor: SshExecutor, tmp_path: pathlib.Path
) -> None:
    with pytest.raises(NotSupported, match="'A-B' is not a variable name a shell"):
        await executor.launch(launch_spec(node="a", env_vars={"A-B": "1"}))
    assert worker_pids(tmp_path) == []


async def test_a_replica_not_ready_in_time_is_killed(
    ssh_hosts: SshHosts, tmp_path: pathlib.Path
) -> None:
    async with open_ssh_executor(ssh_hosts, tmp_path, start_timeout_s=0.5) as executor:
        with pytest.raises(ExecutorError, match=r"not ready within 0\.5s") as caught:
            await executor.launch(launch_spec("Hanging", node="a"))
        assert caught.value.retryable and not isinstance(caught.value, ReplicaStartError)
        assert worker_pids(tmp_path) == []


async def test_stop_is_graceful_and_idempotent(
    executor: SshExecutor, tmp_path: pathlib.Path
) -> None:
    ref = await executor.launch(launch_spec(node="a"))
    began = time.monotonic()
    await executor.stop(ref, timeout_s=10)
    # The worker left on SIGTERM, long before it would have been killed. (That
    # a request in flight finishes first is the contract suite's to check.)
    assert time.monotonic() - began < 5
    assert worker_pids(tmp_path) == []
    await executor.stop(ref, timeout_s=10)
    never_launched = ReplicaRef("echo-never", "ssh", "127.0.0.1:1", node="b", data={"host": "b"})
    await executor.stop(never_launched, timeout_s=10)


async def test_stop_kills_a_replica_that_ignores_sigterm(
    executor: SshExecutor, tmp_path: pathlib.Path
) -> None:
    ref = await executor.launch(launch_spec("Stubborn", node="b"))
    started = time.monotonic()
    await executor.stop(ref, timeout_s=0.5)
    assert time.monotonic() - started < 5
    assert worker_pids(tmp_path) == []


async def test_a_new_executor_adopts_running_replicas(
    ssh_hosts: SshHosts, tmp_path: pathlib.Path
) -> None:
    # The second executor is made first so that, should the test fail, its
    # exit kills whatever the first one left running.
    async with open_ssh_executor(ssh_hosts, tmp_path) as second:
        first = ssh_hosts.executor(tmp_path)
        try:
            launched = [
                await first.launch(launch_spec(node="a")),
                await first.launch(launch_spec(node="b")),
            ]
        finally:
            await first.close()
        # The first executor is closed: its connections are gone, the replicas are not.
        assert len(worker_pids(tmp_path)) == 2
        adopted = sorted(await second.observe(), key=lambda ref: ref.node)
        assert adopted == launched
        assert (await call(adopted[1], "echo", "again"))["text"] == "again"
        for ref in adopted:
            reported = await stats(ref)
            assert (reported.replica_id, reported.nonce) == (ref.replica_id, ref.nonce)
        for ref in adopted:
            await second.stop(ReplicaRef.from_json(ref.to_json()), timeout_s=10)
        assert await second.observe() == []


async def test_a_host_that_goes_down_is_dead_until_it_comes_back(
    ssh_hosts: SshHosts, executor: SshExecutor
) -> None:
    host_b = ssh_hosts.hosts[1]
    ref = await executor.launch(launch_spec(node="b"))
    try:
        host_b.stop(signal.SIGKILL)
        alive = {node.name: node.is_alive for node in await executor.capacity()}
        assert alive == {"a": True, "b": False}
        assert await executor.observe() == []
        with pytest.raises(ExecutorError, match="host b") as caught:
            await executor.stop(ref, timeout_s=1)
        assert caught.value.retryable
        with pytest.raises(ExecutorError, match="host b"):
            await executor.launch(launch_spec(node="b"))
    finally:
        if host_b.process is None:
            host_b.start()

    async def is_back() -> bool:
        return all(node.is_alive for node in await executor.capacity())

    await eventually(is_back, "host b to be reachable again", timeout_s=10)
    # The replica kept running while its host was unreachable: adopted again.
    assert await executor.observe() == [ref]
    await executor.stop(ref, timeout_s=10)


async def test_host_keys_are_checked_against_known_hosts(
    ssh_hosts: SshHosts, tmp_path: pathlib.Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    async with open_ssh_executor(ssh_hosts, tmp_path, known_hosts=str(empty)) as executor:
        assert [node.is_alive for node in await executor.capacity()] == [False, False]
        with pytest.raises(ExecutorError, match=r"cannot reach host a .*not trusted"):
            await executor.launch(launch_spec(node="a"))
    overrides = {"known_hosts": str(empty), "verify_host_keys": False}
    async with open_ssh_executor(ssh_hosts, tmp_path, **overrides) as executor:
        assert [node.is_alive for node in await executor.capacity()] == [True, True]


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"hosts": []}, "hosts"),
        ({"colour": "red"}, "colour"),
        ({"connect_timeout_s": 0}, "connect_timeout_s"),
        ({"hosts": [{"name": "a", "address": "h"}]}, "hosts.0.num_cpus: Field required"),
        ({"hosts": [{"name": "a", "address": "h", "num_cpus": 1, "port": "22"}]}, "hosts.0.port"),
        ({"hosts": [{"name": "a", "address": "h", "num_cpus": 1, "env": {"A-B": "1"}}]}, "A-B"),
        ({"hosts": [{"name": "a", "address": "h", "num_cpus": 1}] * 2}, "used twice"),
    ],
)
def test_config_errors_name_the_key(
    ssh_hosts: SshHosts, tmp_path: pathlib.Path, change: dict[str, Any], key: str
) -> None:
    config = {**ssh_hosts.executor_config(tmp_path), **change}
    with pytest.raises(ValueError, match=re.escape(key)):
        SshExecutor(config, tmp_path)


async def test_read_log_tails_the_replicas_output_over_ssh(executor: SshExecutor) -> None:
    ref = await executor.launch(launch_spec(node="b"))
    following = executor.read_log(ref, since_s=0, follow=True)
    await call(ref, "say", "written on host b")
    async with asyncio.timeout(10):
        async for line in following:
            if line == "written on host b":
                break
    await following.aclose()
    await executor.stop(ref, timeout_s=10)
    # Stopped, and asked without its host: the log is found and read whole.
    gone = ReplicaRef(ref.replica_id, "ssh", address="")
    lines = [line async for line in executor.read_log(gone, since_s=0, follow=False)]
    assert "written on host b" in lines


async def test_archives_unused_for_a_week_are_removed(
    ssh_hosts: SshHosts, tmp_path: pathlib.Path
) -> None:
    archives = workdir(tmp_path, "a") / "archives"
    archives.mkdir(parents=True)
    old, recent = archives / "old.tar.gz", archives / "recent.tar.gz"
    for archive in (old, recent):
        archive.write_bytes(b"archive")
    week_ago = time.time() - 8 * 24 * 3600
    os.utime(old, (week_ago, week_ago))
    async with open_ssh_executor(ssh_hosts, tmp_path) as executor:
        await executor.observe()  # the first look at a host cleans it up
    assert not old.exists() and recent.exists()


async def test_replicas_serve_tls_from_the_cluster_ca_refuse_plaintext_and_get_the_token(
    executor: SshExecutor,
) -> None:
    """SSH hosts are other machines: their replicas listen off loopback (here
    127.0.0.2 stands for one), so callers reach them over TLS, checked
    against the cluster CA. The token comes in the config, not the host's
    environment."""
    spec = launch_spec(node="b", init_args=["tls "])
    spec.config.token = "handle-token"  # as the control plane hands its token on
    ref = await executor.launch(spec)
    try:
        assert ref.tls
        assert (await call(ref, "echo", "hi"))["text"] == "tls hi"
        # Handles inside the replica watch routes with the control API's token.
        assert await call(ref, "env", "CAPSTAN_TOKEN") == "handle-token"
        plaintext = ReplicaRef(ref.replica_id, ref.executor, ref.address, tls=False)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await asyncio.wait_for(stats(plaintext), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        (adopted,) = [r for r in await executor.observe() if r.replica_id == ref.replica_id]
        assert adopted.tls  # a restarted control plane knows it too
    finally:
        await executor.stop(ref, timeout_s=10)
