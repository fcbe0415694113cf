"""Processes that stay up, and go when asked: a killed proxy comes back, a
second `capstan start` leaves the first alone, and Ctrl-C on `capstan run` or
`capstan start` stops everything they started, without a traceback."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys

import httpx
import psutil

from capstan.v1 import controlplane_pb2 as cp
from capstan.v1 import deployment_pb2 as pb
from tests.support.cluster import Cluster, start_cluster, stop_cluster
from tests.support.ports import free_ports
from tests.support.waiting import eventually_sync

ROOT = pathlib.Path(__file__).resolve().parents[2]
APP = """from capstan import serve

@serve.deployment
def hi(request):
    return "hi"

app = hi.bind()
"""


def _capstan(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "capstan", *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT, **kwargs)


def _start(
    control: int | str, http: int | str, grpc: int | str, state_dir: pathlib.Path
) -> list[str]:
    """`capstan start`'s arguments for these ports and state dir."""
    return ["--address", f"127.0.0.1:{control}", "start", "--state-dir", str(state_dir),
            "--http-port", str(http), "--grpc-port", str(grpc)]  # fmt: skip


def _healthz(cluster: Cluster) -> bool:
    try:
        return httpx.get(cluster.http_url + "/-/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_killed_proxy_is_restarted_and_shown_in_status(tmp_path: pathlib.Path) -> None:
    cluster = start_cluster(tmp_path / "capstan")
    try:
        client = cluster.client()
        first = client.proxy_status()
        assert first.state == cp.PROXY_STATE_RUNNING and first.restarts == 0

        os.kill(first.pid, signal.SIGKILL)
        again = eventually_sync(
            lambda: (s := client.proxy_status()).pid not in (0, first.pid) and s,
            "a new proxy",
            timeout_s=5,
        )
        assert again.state == cp.PROXY_STATE_RUNNING and again.restarts == 1
        eventually_sync(lambda: _healthz(cluster), "HTTP to answer again", timeout_s=10)
        shown = _capstan("--address", cluster.address, "status").stdout
        assert f"proxy  running  pid {again.pid}  restarts 1" in shown
    finally:
        stop_cluster(cluster)


def test_a_second_start_refuses_and_leaves_the_first_alone(tmp_path: pathlib.Path) -> None:
    cluster = start_cluster(tmp_path / "capstan")
    try:
        proxy = cluster.client().proxy_status().pid
        control, http, grpc = (
            a.rpartition(":")[2] for a in (cluster.address, cluster.http_url, cluster.grpc_address)
        )
        other_dir, other_ports = tmp_path / "other", free_ports(3)

        same_dir = _capstan(*_start(*other_ports, cluster.state_dir))
        assert same_dir.returncode == 1
        assert f"another capstan start (pid {cluster.process.pid})" in same_dir.stderr
        same_ports = _capstan(*_start(control, http, grpc, other_dir))
        assert same_ports.returncode == 1
        assert f"port {control} on 127.0.0.1 (for the control API) is in use" in same_ports.stderr
        same_http = _capstan(*_start(other_ports[0], http, other_ports[2], other_dir))
        assert f"port {http} on 127.0.0.1 (for the HTTP) is in use" in same_http.stderr

        assert "Traceback" not in same_dir.stderr + same_ports.stderr + same_http.stderr
        assert cluster.client().proxy_status().pid == proxy
        assert cluster.process.poll() is None and _healthz(cluster)
    finally:
        stop_cluster(cluster)


def test_ctrl_c_on_capstan_run_stops_everything_it_started(tmp_path: pathlib.Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    control, http, grpc = free_ports(3)
    state_dir = tmp_path / "state"
    command = _start(control, http, grpc, state_dir)
    command[2:3] = ["run", str(tmp_path / "app.py")]
    output = _interrupt(command, state_dir, f"http://127.0.0.1:{http}/")
    assert "Traceback" not in output and "Exception ignored" not in output, output
    assert f"hi ready at http://127.0.0.1:{http}/" in output
    shutdown = _capstan("--address", f"127.0.0.1:{control}", "shutdown")
    assert shutdown.returncode == 0
    assert shutdown.stdout == f"nothing is running at 127.0.0.1:{control}\n"


def test_ctrl_c_on_capstan_start_stops_its_replicas_too(tmp_path: pathlib.Path) -> None:
    control, http, grpc = free_ports(3)
    state_dir = tmp_path / "state"
    address = f"127.0.0.1:{control}"
    command = _start(control, http, grpc, state_dir)

    def deploy() -> None:
        from capstan.client import ControlPlaneClient

        spec = pb.DeploymentSpec(name="pid", code=pb.Code(import_path="tests.apps.pid:Pid"))
        eventually_sync(lambda: ControlPlaneClient(address).is_reachable(), "capstan start")
        ControlPlaneClient(address).apply(spec, wait=True)

    output = _interrupt(command, state_dir, f"http://127.0.0.1:{http}/pid", before=deploy)
    assert "Traceback" not in output, output


def _interrupt(command: list[str], state_dir: pathlib.Path, url: str, before=None) -> str:
    """Runs `capstan COMMAND` as a terminal would (its own process group),
    waits until `url` answers, sends SIGINT to the whole group as Ctrl-C
    does, and checks that nothing naming the state dir is left running."""
    process = subprocess.Popen([sys.executable, "-m", "capstan", *command], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               process_group=0)  # fmt: skip
    try:
        if before is not None:
            before()
        eventually_sync(lambda: _answers(url, process), f"{url} to answer", timeout_s=60)
        started = [*_left_behind(state_dir), _proxy(state_dir)]
        assert len(started) >= 3, started  # capstan start, a replica, the proxy
        os.killpg(process.pid, signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    eventually_sync(lambda: not any(p.is_running() for p in started), "every process to exit",
                    timeout_s=15)  # fmt: skip
    return output


def _answers(url: str, process: subprocess.Popen) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"capstan exited early: {process.stdout.read()}")
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _left_behind(state_dir: pathlib.Path) -> list[psutil.Process]:
    """Every live process with the state dir in its command line."""
    folder = str(state_dir)
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        command = process.info["cmdline"] or []
        if process.info["status"] != psutil.STATUS_ZOMBIE and any(folder in a for a in command):
            found.append(process)
    return found


def _proxy(state_dir: pathlib.Path) -> psutil.Process:
    return psutil.Process(json.loads((state_dir / "proxy.json").read_text())["pid"])
