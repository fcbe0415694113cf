"""The Ray executor and the test cluster are isolated from other Rays on the
machine: a ~/.ray/auth_token that another Ray left behind (Ray 2.60 turns
token auth on by default) is neither read nor written, and a second Ray
cluster running beside the test one changes nothing."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from tests.contract.exchange_client import call_once as call
from tests.integration.test_ray_executor import launch_spec
from tests.support.ray_cluster import (
    LOOPBACK_ENV,
    REPO_ROOT,
    RayCluster,
    ray_executor,
    start_ray_cluster,
    stop_ray_cluster,
)

pytestmark = pytest.mark.timeout(240)

# Connects to the test cluster with the cluster's token file and calls a
# replica: the driver and the workers authenticate.
_SCRIPT = textwrap.dedent("""
    import asyncio, json, sys
    from executors.registry import load_executor
    from tests.contract.exchange_client import call_once
    from tests.integration.test_ray_executor import launch_spec

    async def serve_once(config, state_dir):
        executor = load_executor("ray", config, state_dir)
        try:
            [node] = await executor.capacity()
            ref = await executor.launch(launch_spec("tests.apps.ray_echo:Echo", "> "))
            answer = await call_once(ref, "echo", "hi")
            await executor.stop(ref, 5.0)
            return node.num_cpus, answer
        finally:
            await executor.close()

    print(json.dumps(asyncio.run(serve_once(json.loads(sys.argv[2]), sys.argv[1]))))
""")


def test_a_stale_home_token_is_neither_read_nor_written(
    ray_cluster: RayCluster, tmp_path: pathlib.Path
) -> None:
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    stale = home / ".ray" / "auth_token"
    stale.write_text("a-token-another-ray-left-behind")
    env = {**os.environ, **LOOPBACK_ENV, "HOME": str(home), "PYTHONPATH": str(REPO_ROOT)}
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path), json.dumps(ray_cluster.executor_config())],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == f'[{float(ray_cluster.num_cpus)}, "> hi"]'
    assert stale.read_text() == "a-token-another-ray-left-behind"
    assert sorted(p.name for p in (home / ".ray").iterdir()) == ["auth_token"]


def test_an_own_ray_gets_a_token_of_its_own(ray_cluster: RayCluster) -> None:
    from executors.ray.connection import _auth_environment
    from executors.ray.settings import RaySettings

    first, second = (_auth_environment(RaySettings()) for _ in range(2))
    assert first["RAY_AUTH_MODE"] == "token" and len(first["RAY_AUTH_TOKEN"]) == 64
    assert first["RAY_AUTH_TOKEN"] != second["RAY_AUTH_TOKEN"]
    assert _auth_environment(RaySettings(address="auto")) == {}  # Ray's own defaults
    with pytest.raises(ValueError, match="auth_token_file applies only to a cluster"):
        RaySettings(auth_token_file=str(ray_cluster.auth_token_file))


async def test_a_second_ray_beside_the_test_cluster_changes_nothing(
    ray_cluster: RayCluster, tmp_path: pathlib.Path
) -> None:
    other = start_ray_cluster(num_cpus=1)
    try:
        async with ray_executor(ray_cluster, tmp_path) as executor:
            [node] = await executor.capacity()
            assert node.num_cpus == ray_cluster.num_cpus
            ref = await executor.launch(launch_spec("tests.apps.ray_echo:Echo", "beside "))
            assert await call(ref, "echo", "hi") == "beside hi"
            await executor.stop(ref, timeout_s=5)
    finally:
        stop_ray_cluster(other)
