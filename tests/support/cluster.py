"""A real local Capstan for tests: `capstan start` in its own process, on free
loopback ports, with a state folder of its own. Stopping it checks that no
process it started is left behind."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys

import httpx

from capstan.client import ControlPlaneClient
from capstan.errors import CapstanError
from tests.support.ports import free_ports
from tests.support.waiting import eventually_sync


@dataclasses.dataclass
class Cluster:
    state_dir: pathlib.Path
    address: str
    http_url: str
    grpc_address: str
    process: subprocess.Popen
    # The control plane's HTTP port: /metrics and the dashboard.
    metrics_url: str = ""
    # Where `capstan start` runs; None: the tests' own working directory.
    cwd: pathlib.Path | None = None

    def client(self) -> ControlPlaneClient:
        return ControlPlaneClient(self.address)

    def log(self) -> str:
        logs = self.state_dir / "logs"
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in sorted(logs.glob("*"))
        )

    def processes(self) -> list[int]:
        """Pids of every live process that belongs to this cluster: the proxy,
        and any process with an argument naming the state folder or a file in it."""
        folder = str(self.state_dir)
        proxy = self.state_dir / "proxy.json"
        proxy_pid = json.loads(proxy.read_text())["pid"] if proxy.exists() else None
        pids = []
        for entry in pathlib.Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            ours = any(a == folder or a.startswith(folder + "/") for a in args)
            if state != "Z" and (ours or int(entry.name) == proxy_pid):
                pids.append(int(entry.name))
        return pids


def start_cluster(
    state_dir: pathlib.Path, config: dict | None = None, cwd: pathlib.Path | None = None
) -> Cluster:
    state_dir.mkdir(parents=True, exist_ok=True)
    control_port, http_port, grpc_port, metrics_port = free_ports(4)
    if config is not None:
        (state_dir / "config.json").write_text(json.dumps(config))
    cluster = Cluster(
        state_dir,
        f"127.0.0.1:{control_port}",
        f"http://127.0.0.1:{http_port}",
        f"127.0.0.1:{grpc_port}",
        process=None,  # type: ignore[arg-type]
        metrics_url=f"http://127.0.0.1:{metrics_port}",
        cwd=cwd,
    )
    return restart_cluster(cluster)


def restart_cluster(cluster: Cluster) -> Cluster:
    """Runs `capstan start` for the cluster's state folder and ports (again,
    after a crash) and waits until its proxy answers."""
    state_dir = cluster.state_dir
    http_port = cluster.http_url.rpartition(":")[2]
    grpc_port = cluster.grpc_address.rpartition(":")[2]
    command = [sys.executable, "-m", "capstan", "--address", cluster.address, "start"]
    command += ["--state-dir", str(state_dir), "--http-port", http_port]
    command += ["--grpc-port", grpc_port]
    if cluster.metrics_url:
        command += ["--metrics-port", cluster.metrics_url.rpartition(":")[2]]
    if (state_dir / "config.json").exists():
        command += ["--config", str(state_dir / "config.json")]
    (state_dir / "logs").mkdir(exist_ok=True)
    with open(state_dir / "logs" / "capstan.log", "ab") as log:
        cluster.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=cluster.cwd
        )
    try:
        eventually_sync(lambda: _is_ready(cluster), "capstan start to answer", timeout_s=60)
    except TimeoutError:
        stop_cluster(cluster)
        raise
    return cluster


def _is_ready(cluster: Cluster) -> bool:
    """Both the control plane and the proxy answer. (After a crash the proxy
    is still up, so it alone says nothing about the new control plane.)"""
    if cluster.process.poll() is not None:
        raise RuntimeError(f"capstan start exited early:\n{cluster.log()}")
    client = cluster.client()
    try:
        if not client.is_reachable(timeout_s=0.2):
            return False
    finally:
        client.close()
    try:
        return httpx.get(cluster.http_url + "/-/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def stop_cluster(cluster: Cluster) -> None:
    """Shuts the cluster down through its API, then makes sure nothing it
    started is still running (and kills what is, failing loudly)."""
    client = cluster.client()
    try:
        client.shutdown()
    except CapstanError as error:
        print(f"shutdown of {cluster.address} failed: {error!r}", file=sys.stderr)
    finally:
        client.close()
    try:
        cluster.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(cluster.process.pid, signal.SIGKILL)
        cluster.process.wait()
    try:
        eventually_sync(lambda: not cluster.processes(), "cluster processes to exit", timeout_s=15)
    except TimeoutError:
        leftovers = cluster.processes()
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)
        raise AssertionError(f"processes left behind by the cluster: {leftovers}") from None
