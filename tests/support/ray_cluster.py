"""A real local Ray for tests: one head node per test session, started with
the CLI on free loopback ports, and the Ray executor connected to it.

Loopback only: Ray on Linux turns 127.0.0.1 into the machine's routable IP
unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (a single-node cluster). Ray reads
that when it is imported, so it is set here before anything imports Ray, in
both the test process and the `ray start` process.

The head runs as `ray start --block` in a session of its own, so every
process it starts (GCS, raylet, workers, replica actors) shares that session
id: stopping sends SIGTERM to the one process we started, then checks that
nothing of the session is left (killing and failing loudly if something is),
rather than `ray stop`, which would end every Ray on the machine.

Ray workers import user code from the repository (tests.apps.*): the head
is started with PYTHONPATH set to the repository's root, and workers
inherit it.

Isolated from any other Ray on the machine: its own temp dir, every port it
listens on picked at once (so no two of its components get the same one),
and token auth with a token of its own (RAY_AUTH_MODE/RAY_AUTH_TOKEN in its
environment, so a ~/.ray/auth_token left by another Ray is never read). The
executor gets that token through its `auth_token_file` setting, as a user's
executor would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from executors.base import Executor
from executors.registry import load_executor
from tests.support.ports import free_ports
from tests.support.waiting import eventually_sync

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
# Workers on a 2-core machine: a small cluster, and small replicas.
NUM_CPUS = 4
_START_TIMEOUT_S = 90.0
_STOP_TIMEOUT_S = 30.0
_READY_MARKER = "Ray runtime started"


@dataclasses.dataclass(frozen=True)
class RayCluster:
    """A running head node: its GCS address and the process that owns it."""

    address: str
    # Ray Client's address (ray://...), for drivers off the cluster.
    client_address: str
    temp_dir: pathlib.Path
    process: subprocess.Popen
    auth_token_file: pathlib.Path
    num_cpus: int
    started_in_s: float

    def executor_config(self, **overrides: Any) -> dict[str, Any]:
        """A `ray` executor config section that connects to this cluster."""
        return {"address": self.address, "auth_token_file": str(self.auth_token_file), **overrides}

    def processes(self) -> list[int]:
        """Live (non-zombie) processes in the head's session."""
        pids = []
        for entry in pathlib.Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # After "pid (comm)": state, ppid, pgrp, session.
            if fields[0] != "Z" and int(fields[3]) == self.process.pid:
                pids.append(int(entry.name))
        return pids

    def log(self) -> str:
        return (self.temp_dir / "ray-start.log").read_text(errors="replace")[-4000:]


def use_loopback() -> None:
    """Makes Ray in this process keep 127.0.0.1; fails if Ray was imported
    before it could."""
    os.environ.update(LOOPBACK_ENV)
    if "ray" in sys.modules:
        from ray._private import ray_constants

        assert not ray_constants.ENABLE_RAY_CLUSTER, (
            "ray was imported before tests.support.ray_cluster.use_loopback(); "
            "import Ray-using code inside fixtures"
        )


def start_ray_cluster(num_cpus: int = NUM_CPUS) -> RayCluster:
    """Starts a head node and returns once it accepts drivers."""
    use_loopback()
    # Ray puts socket paths under its temp dir; keep it short.
    temp_dir = pathlib.Path(tempfile.mkdtemp(prefix="capstan-ray-", dir="/tmp"))
    token_file = temp_dir / "auth_token"
    token_file.write_text(secrets.token_hex(32))
    token_file.chmod(0o600)
    ports = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS)), strict=True))
    began = time.monotonic()
    with open(temp_dir / "ray-start.log", "wb") as log:
        process = subprocess.Popen(
            _start_command(temp_dir, num_cpus, ports),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_start_env(token_file.read_text()),
            start_new_session=True,
        )
    cluster = RayCluster(
        f"127.0.0.1:{ports['--port']}",
        f"ray://127.0.0.1:{ports['--ray-client-server-port']}",
        temp_dir,
        process,
        token_file,
        num_cpus,
        0.0,
    )
    try:
        _wait_ready(cluster)
    except BaseException:
        stop_ray_cluster(cluster)
        raise
    return dataclasses.replace(cluster, started_in_s=time.monotonic() - began)


# Every port the head listens on; the ones left out would be Ray's fixed
# defaults (52365 for the agent), shared with any other Ray on the machine.
_PORT_FLAGS = (
    "--port",
    "--ray-client-server-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--metrics-export-port",
    "--node-manager-port",
    "--object-manager-port",
    "--runtime-env-agent-port",
)


def _start_command(temp_dir: pathlib.Path, num_cpus: int, ports: dict[str, int]) -> list[str]:
    ray = pathlib.Path(sys.executable).with_name("ray")
    return [
        str(ray), "start", "--head", "--block",
        "--node-ip-address", "127.0.0.1",
        "--num-cpus", str(num_cpus),
        "--num-gpus", "0",
        "--include-dashboard=false",
        "--disable-usage-stats",
        "--temp-dir", str(temp_dir),
        *(f"{flag}={port}" for flag, port in ports.items()),
    ]  # fmt: skip


def _start_env(token: str) -> dict[str, str]:
    env = dict(os.environ, **LOOPBACK_ENV, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    # SIGTERM ends the node at once instead of draining it for 30 s.
    env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "0"
    env.pop("RAY_ADDRESS", None)
    return env


def _wait_ready(cluster: RayCluster) -> None:
    log = cluster.temp_dir / "ray-start.log"
    what = f"ray start to be ready (its log: {log})"
    eventually_sync(lambda: _is_ready(cluster), what, timeout_s=_START_TIMEOUT_S, interval_s=0.1)


def _is_ready(cluster: RayCluster) -> bool:
    if cluster.process.poll() is not None:
        raise RuntimeError(f"ray start exited early:\n{cluster.log()}")
    return _READY_MARKER in (cluster.temp_dir / "ray-start.log").read_text(errors="replace")


def stop_ray_cluster(cluster: RayCluster) -> None:
    """Stops the head and everything it started; raises AssertionError
    (after killing them) if any of its processes outlive it."""
    if cluster.process.poll() is None:
        cluster.process.send_signal(signal.SIGTERM)
        try:
            cluster.process.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            cluster.process.kill()
            cluster.process.wait()
    try:
        eventually_sync(
            lambda: not cluster.processes(), "Ray's processes to exit", timeout_s=_STOP_TIMEOUT_S
        )
    except TimeoutError:
        leftovers = cluster.processes()
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        message = f"Ray processes left behind: {leftovers} (logs in {cluster.temp_dir})"
        raise AssertionError(message) from None
    if not os.environ.get("KEEP_RAY_LOGS"):
        shutil.rmtree(cluster.temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """One local Ray head for the whole test session."""
    cluster = start_ray_cluster()
    yield cluster
    stop_ray_cluster(cluster)


def make_ray_executor(cluster: RayCluster, state_dir: pathlib.Path, **config: Any) -> Executor:
    """A new, unconnected RayExecutor for `cluster`, found through its entry
    point like any plugin (this imports Ray: call it after the cluster is up)."""
    return load_executor("ray", cluster.executor_config(**config), state_dir)


@contextlib.asynccontextmanager
async def ray_executor(
    cluster: RayCluster, state_dir: pathlib.Path, **config: Any
) -> AsyncIterator[Executor]:
    """A connected RayExecutor; on exit every replica in its namespace is
    stopped and the executor closed."""
    executor = make_ray_executor(cluster, state_dir, **config)
    try:
        await executor.capacity()  # connects
        yield executor
    finally:
        for ref in await executor.observe():
            await executor.stop(ref, 5.0)
        await executor.close()
