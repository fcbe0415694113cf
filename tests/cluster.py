"""A real local Capstan for tests: `capstan start` in its own process, on free
loopback ports, with a state folder of its own. Stopping it checks that no
process it started is left behind."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import httpx

from capstan.client import ControlPlaneClient
from capstan.errors import CapstanError


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports: every socket stays bound until all are
    picked, so the kernel cannot hand out the same port twice."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_until(condition, timeout_s: float, what: str, interval_s: float = 0.02):
    """Polls `condition` until it returns something truthy or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


@dataclasses.dataclass
class Cluster:
    state_dir: pathlib.Path
    address: str
    http_url: str
    grpc_address: str
    process: subprocess.Popen

    def client(self) -> ControlPlaneClient:
        return ControlPlaneClient(self.address)

    def log(self) -> str:
        logs = self.state_dir / "logs"
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in sorted(logs.glob("*"))
        )

    def processes(self) -> list[int]:
        """Pids of every live process that belongs to this cluster."""
        marker = str(self.state_dir).encode()
        pids = []
        proxy = self.state_dir / "proxy.json"
        proxy_pid = json.loads(proxy.read_text())["pid"] if proxy.exists() else None
        for entry in pathlib.Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z" and (marker in cmdline or int(entry.name) == proxy_pid):
                pids.append(int(entry.name))
        return pids


def start_cluster(state_dir: pathlib.Path, config: dict | None = None) -> Cluster:
    state_dir.mkdir(parents=True, exist_ok=True)
    control_port, http_port, grpc_port = free_ports(3)
    address = f"127.0.0.1:{control_port}"
    command = [sys.executable, "-m", "capstan", "--address", address, "start"]
    command += ["--state-dir", str(state_dir), "--http-port", str(http_port)]
    command += ["--grpc-port", str(grpc_port)]
    if config is not None:
        config_file = state_dir / "config.json"
        config_file.write_text(json.dumps(config))
        command += ["--config", str(config_file)]
    (state_dir / "logs").mkdir(exist_ok=True)
    with open(state_dir / "logs" / "capstan.log", "ab") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    cluster = Cluster(
        state_dir, address, f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", process
    )
    try:
        wait_until(lambda: _is_ready(cluster), 60, "capstan start to answer")
    except TimeoutError:
        stop_cluster(cluster)
        raise
    return cluster


def _is_ready(cluster: Cluster) -> bool:
    if cluster.process.poll() is not None:
        raise RuntimeError(f"capstan start exited early:\n{cluster.log()}")
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
    except CapstanError:
        pass
    finally:
        client.close()
    try:
        cluster.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(cluster.process.pid, signal.SIGKILL)
        cluster.process.wait()
    try:
        wait_until(lambda: not cluster.processes(), 15, "cluster processes to exit")
    except TimeoutError:
        leftovers = cluster.processes()
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)
        raise AssertionError(f"processes left behind by the cluster: {leftovers}") from None
