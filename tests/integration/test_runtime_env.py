"""runtime_env.pip and runtime_env.conda with real processes: the builder
(`python -m executors.runtime_env.build`) installing from the real package
index, the local executor and the ssh executor (on a real sshd) starting
replicas on the interpreter it built. conda is not installed here, so only
its error is tested."""

from __future__ import annotations

import asyncio
import json
import pathlib
import shutil
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from capstan.v1 import deployment_pb2
from executors.base import ExecutorError, LaunchSpec, NotSupported, ReplicaRef
from executors.local import LocalExecutor
from executors.runtime_env.build import READY, env_key
from tests.contract.exchange_client import ExchangeClient
from tests.contract.specs import REPO_ROOT, launch_spec_of, replica_config
from tests.support.sshd import SshHosts, open_ssh_executor

MISSING = "capstan-no-such-package==1.0"
# The test venv's own idna (httpx needs it): what a replica without pins sees.
PARENT_IDNA = __import__("idna").__version__


def pinned_spec(pip: Sequence[str] = (), *, conda: str = "", node: str = "") -> LaunchSpec:
    runtime_env = deployment_pb2.RuntimeEnv(pip=list(pip), conda=conda)
    options = deployment_pb2.ReplicaOptions(runtime_env=runtime_env)
    config = replica_config("tests.apps.pinned:IdnaVersion", replica_options=options)
    return launch_spec_of(config, node=node, env={"PYTHONPATH": str(REPO_ROOT)})


async def build(root: pathlib.Path, requirements: Sequence[str]) -> tuple[int, dict, str]:
    """Runs the builder as the executors do; its exit code, JSON and stderr."""
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "executors.runtime_env.build", "--root", str(root)],
        *["--pip-json", json.dumps(list(requirements))],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    result = json.loads(stdout) if process.returncode == 0 else {}
    return process.returncode, result, stderr.decode()


async def python_says(python: str, code: str) -> str:
    process = await asyncio.create_subprocess_exec(
        python, "-c", code, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    return stdout.decode().strip()


async def report(ref: ReplicaRef) -> dict[str, Any]:
    async with ExchangeClient(ref) as client:
        return await client.call("report")


@pytest.fixture
async def local(tmp_path: pathlib.Path) -> AsyncIterator[LocalExecutor]:
    """A local executor whose replicas are all stopped at the end."""
    executor = LocalExecutor({"num_cpus": 4}, tmp_path / "state")
    try:
        yield executor
    finally:
        for ref in await executor.observe():
            await executor.stop(ref, timeout_s=10)
        await executor.close()


async def test_builder_builds_an_env_once_even_when_asked_concurrently(
    tmp_path: pathlib.Path,
) -> None:
    root = tmp_path / "envs"
    async with asyncio.TaskGroup() as group:
        builds = [group.create_task(build(root, ["idna==2.10"])) for _ in range(3)]
    results = [task.result() for task in builds]
    assert [code for code, _, _ in results] == [0, 0, 0], results
    assert len({result["python"] for _, result, _ in results}) == 1
    assert sorted(result["built"] for _, result, _ in results) == [False, False, True]
    python = results[0][1]["python"]
    assert python == str(root / env_key(["idna==2.10"]) / "bin" / "python")
    # The pinned idna shadows the parent venv's, and capstan still imports.
    code = "import idna, executors.replica, capstan; print(idna.__version__, idna.__file__)"
    version, location = (await python_says(python, code)).split()
    assert version == "2.10" and location.startswith(str(root))
    # Asked again (a later replica, a restarted control plane): found ready.
    started = asyncio.get_running_loop().time()
    code, again, _ = await build(root, ["idna==2.10"])
    assert code == 0 and again == {"python": python, "built": False}
    assert asyncio.get_running_loop().time() - started < 5


async def test_failed_install_names_the_requirement_and_leaves_no_env(
    tmp_path: pathlib.Path,
) -> None:
    root = tmp_path / "envs"
    code, _, stderr = await build(root, ["idna==3.7", MISSING])
    assert code == 1
    assert f"pip install idna==3.7 {MISSING} failed" in stderr
    # pip's own words, naming the package it could not find.
    assert f"No matching distribution found for {MISSING}" in stderr
    key = env_key(["idna==3.7", MISSING])
    assert not (root / key).exists()
    assert sorted(p.name for p in root.iterdir()) == [f"{key}.lock", f"{key}.log"]


async def test_builder_refuses_pip_options(tmp_path: pathlib.Path) -> None:
    code, _, stderr = await build(tmp_path / "envs", ["--index-url=http://example.invalid"])
    assert code == 1 and "runtime_env.pip takes requirements, not pip options" in stderr


async def test_local_replicas_run_on_their_env_beside_unpinned_ones(
    local: LocalExecutor, tmp_path: pathlib.Path
) -> None:
    assert local.capabilities.supports_pip and local.capabilities.supports_conda
    pinned, plain = pinned_spec(["idna==2.10"]), pinned_spec()
    await local.prepare(pinned)
    await local.prepare(plain)
    envs = tmp_path / "state" / "envs"
    assert (envs / env_key(["idna==2.10"]) / READY).is_file()
    refs = [await local.launch(pinned), await local.launch(plain)]
    pinned_report, plain_report = [await report(ref) for ref in refs]
    assert pinned_report["idna"] == "2.10"
    assert pinned_report["python"].startswith(str(envs))
    assert plain_report["idna"] == PARENT_IDNA
    assert plain_report["python"] == sys.executable
    # A restarted control plane's executor finds the env ready: no new build
    # (pip's log is written by builds only).
    pip_log = envs / f"{env_key(['idna==2.10'])}.log"
    written = pip_log.stat().st_mtime_ns
    restarted = LocalExecutor({"num_cpus": 4}, tmp_path / "state")
    await restarted.prepare(pinned)
    await restarted.close()
    assert pip_log.stat().st_mtime_ns == written


async def test_local_failed_install_is_a_final_error_and_starts_nothing(
    local: LocalExecutor,
) -> None:
    spec = pinned_spec([MISSING])
    with pytest.raises(ExecutorError) as raised:
        await local.prepare(spec)
    assert raised.value.retryable is False
    message = str(raised.value)
    assert message.startswith(f"runtime_env.pip ['{MISSING}'] could not be prepared on node local")
    assert f"No matching distribution found for {MISSING}" in message
    # launch (prepare skipped) refuses the same way, before starting a worker.
    with pytest.raises(ExecutorError, match="No matching distribution"):
        await local.launch(pinned_spec([MISSING]))
    assert await local.observe() == []


async def test_local_conda_without_conda_is_a_clear_error(
    local: LocalExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert shutil.which("conda") is None, "this test needs a machine without conda"
    monkeypatch.delenv("CONDA_EXE", raising=False)
    with pytest.raises(NotSupported) as raised:
        await local.prepare(pinned_spec(conda="capstan-env"))
    assert raised.value.retryable is False
    assert str(raised.value).endswith(
        "runtime_env.conda needs conda on node local, and conda was not found there"
    )


async def test_ssh_replica_runs_on_an_env_built_on_its_host(
    ssh_hosts: SshHosts, tmp_path: pathlib.Path
) -> None:
    async with open_ssh_executor(ssh_hosts, tmp_path) as executor:
        assert executor.capabilities.supports_pip
        spec = pinned_spec(["idna==3.7"], node="b")
        await executor.prepare(spec)
        envs = tmp_path / "hosts" / "b" / "envs"
        assert (envs / env_key(["idna==3.7"]) / READY).is_file()
        ref = await executor.launch(spec)
        try:
            answer = await report(ref)
        finally:
            await executor.stop(ref, timeout_s=10)
        assert answer["idna"] == "3.7" and answer["python"].startswith(str(envs))


async def test_ssh_build_failures_are_clear_errors(
    ssh_hosts: SshHosts, tmp_path: pathlib.Path
) -> None:
    assert shutil.which("conda") is None, "this test needs a machine without conda"
    async with open_ssh_executor(ssh_hosts, tmp_path) as executor:
        with pytest.raises(ExecutorError) as raised:
            await executor.prepare(pinned_spec([MISSING], node="a"))
        assert raised.value.retryable is False
        assert "could not be prepared on node a" in str(raised.value)
        assert f"No matching distribution found for {MISSING}" in str(raised.value)
        with pytest.raises(ExecutorError) as raised:
            await executor.prepare(pinned_spec(conda="capstan-env", node="a"))
        assert str(raised.value).endswith(
            "runtime_env.conda needs conda on node a, and conda was not found there"
        )
        assert await executor.observe() == []
