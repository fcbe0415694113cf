"""Code shipped from the caller (issue 10): `capstan run mymod:app` in a
folder that exists only on the caller's side deploys through a control plane
whose state and working directory are elsewhere, locally and on an SSH host.
The replica imports `mymod` (and the module it imports at call time) from
the uploaded package, unpacked on its own node, and answers over HTTP."""

from __future__ import annotations

import pathlib
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator

import httpx
import pytest

from capstan import serve
from capstan.client import ControlPlaneClient
from capstan.errors import InvalidSpec
from tests.support.cluster import Cluster, start_cluster, stop_cluster
from tests.support.sshd import SshHosts
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.timeout(120)

MYMOD = """
import os

from capstan import serve


class Hello:
    def __call__(self, request):
        import greeting  # found at call time, in the replica's working_dir

        return {{"greeting": greeting.VALUE, "file": greeting.__file__, "cwd": os.getcwd()}}


app = serve.deployment(
    Hello,
    executor={executor!r},
    ray_actor_options={{"num_cpus": 0.25, "runtime_env": {{"working_dir": "."}}}},
    graceful_shutdown_wait_loop_s=0.1,
).bind()
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, ssh_hosts: SshHosts) -> Iterator[Cluster]:
    """`capstan start` with its state folder and working directory in a temp
    folder of its own, with the local and ssh executors."""
    home = tmp_path_factory.mktemp("controlplane")
    state_dir = home / "state"
    config = {
        "default_executor": "local",
        "executors": {"local": {}, "ssh": ssh_hosts.executor_config(state_dir)},
    }
    started = start_cluster(state_dir, config, cwd=home)
    yield started
    stop_cluster(started)


@pytest.fixture
def user_folder(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The caller's project: only here, nowhere the control plane looks."""
    folder = tmp_path_factory.mktemp("laptop") / "project"
    folder.mkdir()
    (folder / "greeting.py").write_text(f"VALUE = {uuid.uuid4().hex!r}\n")
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "stale.pyc").write_bytes(b"never shipped")
    return folder


@pytest.mark.parametrize("executor", ["local", "ssh"])
def test_capstan_run_ships_the_callers_folder_to_the_replica(
    executor: str, cluster: Cluster, user_folder: pathlib.Path
) -> None:
    (user_folder / "mymod.py").write_text(MYMOD.format(executor=executor))
    name, prefix = f"shipped-{executor}", f"/shipped/{executor}"
    command = [sys.executable, "-m", "capstan", "--address", cluster.address, "run", "mymod:app"]
    command += ["--name", name, "--route-prefix", prefix]
    output = user_folder.parent / f"{executor}.out"
    with output.open("wb") as sink:
        cli = subprocess.Popen(command, cwd=user_folder, stdout=sink, stderr=subprocess.STDOUT)
    try:
        eventually_sync(
            lambda: _serving(cli, output), f"capstan run on {executor} to serve", timeout_s=90
        )
        # Rolled out is the control plane's word; the proxy learns the route a moment later.
        answer = eventually_sync(
            lambda: (
                (r := httpx.get(cluster.http_url + prefix, timeout=10)).status_code == 200 and r
            ),
            f"the proxy to route {prefix}",
        ).json()
    finally:
        cli.send_signal(signal.SIGTERM)
        cli.wait(timeout=30)
    client = cluster.client()
    try:
        client.delete_application(name)
    finally:
        client.close()

    value = (user_folder / "greeting.py").read_text().split("'")[1]
    assert answer["greeting"] == value
    unpacked = pathlib.Path(answer["cwd"])
    assert answer["file"] == str(unpacked / "greeting.py")
    # Unpacked from the package on the replica's node, under the cluster's
    # state (an SSH host's workdir), never read from the caller's folder.
    assert unpacked.parent.name == "packages"
    assert unpacked.is_relative_to(cluster.state_dir)
    assert not (unpacked / "__pycache__" / "stale.pyc").exists()
    host_root = cluster.state_dir / "hosts"
    assert unpacked.is_relative_to(host_root) == (executor == "ssh")


def test_an_import_path_missing_from_the_package_is_refused_at_once(
    cluster: Cluster, user_folder: pathlib.Path
) -> None:
    deployment = serve.deployment(
        "elsewhere:App", name="elsewhere",
        ray_actor_options={"runtime_env": {"working_dir": str(user_folder)}},
    )  # fmt: skip
    client = ControlPlaneClient(cluster.address)
    try:
        with pytest.raises(InvalidSpec) as refused:
            client.apply(deployment.to_spec(), timeout_s=5)
        assert "'elsewhere:App'" in refused.value.message
        assert "capstan-package://" in refused.value.message
        assert [d.spec.name for d in client.list()] == []
    finally:
        client.close()


def _serving(cli: subprocess.Popen, output: pathlib.Path) -> bool:
    text = output.read_text(errors="replace")
    if cli.poll() is not None:
        raise AssertionError(f"capstan run exited with {cli.returncode}:\n{text}")
    return "Serving;" in text
