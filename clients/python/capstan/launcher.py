"""Runs a local Capstan: the control plane in this process and the HTTP/gRPC
proxy as a child in its own session, supervised by the control plane, so the
proxy (and the replicas) keep serving if the control plane crashes, and a
restarted control plane reuses them. One instance per state dir. `capstan
start` runs it in the foreground; `serve.start()` spawns `capstan start` for a
script."""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import psutil

from capstan import defaults
from capstan.client import ControlPlaneClient
from capstan.errors import Unavailable
from capstan.instance_lock import AlreadyRunning, InstanceLock
from capstan.tls import TlsFiles


class LocalServices:
    """The control plane and proxy of one state folder."""

    def __init__(
        self,
        *,
        state_dir: str | os.PathLike = ".capstan",
        address: str = defaults.CONTROL_PLANE_ADDRESS,
        http_host: str = "127.0.0.1",
        http_port: int = defaults.HTTP_PORT,
        grpc_port: int = defaults.GRPC_PORT,
        metrics_port: int = defaults.METRICS_PORT,
        access_log: bool = True,
        config: dict | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self.state_dir = pathlib.Path(state_dir).resolve()
        self.address = address
        self.http_host, self.http_port, self.grpc_port = http_host, http_port, grpc_port
        self.metrics_port = metrics_port
        self.access_log = access_log
        self.config = config or {}
        self.tls = tls
        self._process: psutil.Popen | None = None

    # -- in the foreground (capstan start) ---------------------------------

    def run(self) -> None:
        """Serves until the control plane is shut down (Shutdown RPC, SIGTERM
        or Ctrl-C), then stops the proxy. Refuses, touching nothing, when
        another `capstan start` holds the state dir or a port is taken."""
        from controlplane.proxy_supervisor import ProxyLaunch, ProxySupervisor, adoptable_proxy
        from controlplane.server import run_control_plane
        from controlplane.settings import Settings

        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        host, _, port = self.address.rpartition(":")
        settings = Settings(
            state_dir=self.state_dir,
            host=host,
            port=int(port),
            default_executor=self.config.get("default_executor", "local"),
            executors=self.config.get("executors", {"local": {}}),
            # The proxy and replicas inherit the same variable to send it.
            token=os.environ.get("CAPSTAN_TOKEN", ""),
            metrics_port=self.metrics_port,
            proxy_url=f"{'https' if self.tls else 'http'}://{self.http_host}:{self.http_port}",
            **_tls_settings(self.tls),
        )
        with InstanceLock(self.state_dir):
            self._check_ports((host, int(port), "control API"))
            if adoptable_proxy(self.state_dir / "proxy.json") is None:
                self._check_ports(
                    (self.http_host, self.http_port, "HTTP"), ("127.0.0.1", self.grpc_port, "gRPC")
                )
            launch = ProxyLaunch(
                tuple(self._proxy_command()),
                record=self.state_dir / "proxy.json",
                log=self.state_dir / "logs" / "proxy.log",
            )
            asyncio.run(run_control_plane(settings, proxy=ProxySupervisor(launch)))

    def _check_ports(self, *ports: tuple[str, int, str]) -> None:
        """The ports this instance would listen on are free. (Those of a proxy
        that a crashed instance of this state dir left serving are not
        checked: the lock says no other instance runs here, so that proxy is
        ours to adopt.)"""
        for where, number, what in ports:
            if not _is_free(where, number):
                raise AlreadyRunning(
                    f"port {number} on {where} (for the {what}) is in use by another "
                    "process, perhaps another capstan start: stop it (capstan shutdown) "
                    "or choose other ports"
                )

    def _proxy_command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "proxy",
            "--control-plane",
            self.address,
            "--http-host",
            self.http_host,
            "--http-port",
            str(self.http_port),
            "--grpc-port",
            str(self.grpc_port),
            "--access-log",
            str(self.state_dir / "logs" / "access.log") if self.access_log else "",
            *(self.tls.flags() if self.tls else []),
        ]

    # -- from a script (serve.start) ---------------------------------------

    def spawn(self, *, detached: bool, timeout_s: float = 60) -> None:
        """Starts `capstan start` as a child and waits until both the control
        plane and the HTTP proxy answer."""
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "capstan", "--address", self.address, "start"]
        command += ["--state-dir", str(self.state_dir), "--http-host", self.http_host]
        command += ["--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port)]
        command += ["--metrics-port", str(self.metrics_port)]
        with open(logs / "capstan.log", "ab") as log:
            self._process = psutil.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Attached, it still has a process group of its own: Ctrl-C
                # reaches only this process, which then shuts it down (both
                # stopping at once would race).
                start_new_session=detached,
                process_group=None if detached else 0,
            )
        try:
            self._wait_ready(time.monotonic() + timeout_s, logs / "capstan.log")
        except BaseException:  # not ready, or Ctrl-C while waiting
            _stop_process(self._process, timeout_s=30, signum=signal.SIGINT)
            raise

    def _wait_ready(self, deadline: float, log: pathlib.Path) -> None:
        client = ControlPlaneClient(self.address)
        try:
            while not client.is_reachable(timeout_s=0.2):
                self._check_alive(log, deadline)
            while not _port_open(self.http_host, self.http_port):
                self._check_alive(log, deadline)
                time.sleep(0.02)
        finally:
            client.close()

    def _check_alive(self, log: pathlib.Path, deadline: float) -> None:
        if self._process is not None and self._process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise Unavailable(f"capstan start exited with {self._process.returncode}:\n{tail}")
        if time.monotonic() > deadline:
            raise Unavailable(f"capstan did not become ready in time; see {log}")

    def wait_stopped(self, timeout_s: float) -> None:
        """Waits for a spawned `capstan start` to exit, killing it past the timeout."""
        if self._process is not None:
            _stop_process(self._process, timeout_s)


def read_config(path: str | os.PathLike) -> dict:
    """A `capstan start --config` file (YAML or JSON): `default_executor` and
    `executors`, a mapping of executor name to that executor's settings."""
    import yaml

    config = yaml.safe_load(pathlib.Path(path).read_text()) or {}
    if not isinstance(config, dict) or not set(config) <= {"default_executor", "executors"}:
        raise ValueError(f"{path}: expected a mapping with default_executor and executors")
    return config


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def _is_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _stop_process(process: psutil.Process, timeout_s: float, signum: int = signal.SIGTERM) -> None:
    """`signum`, then SIGKILL after the timeout; waits until it has exited
    (and is reaped, when it is our child). SIGINT asks `capstan start` to
    stop its replicas too."""
    try:
        process.send_signal(signum)
    except psutil.NoSuchProcess:
        return
    _, alive = psutil.wait_procs([process], timeout=timeout_s)
    for survivor in alive:
        survivor.kill()
    psutil.wait_procs(alive, timeout=timeout_s)


def _tls_settings(tls: TlsFiles | None) -> dict[str, str]:
    """The control plane's TLS settings. Its own proxy checks the control
    API's certificate against $CAPSTAN_TLS_CA, or the certificate itself
    (a self-signed one) when that is unset; where clients must present a
    certificate, it presents $CAPSTAN_TLS_CERT/_KEY, by default the server's."""
    if tls is None:
        return {}
    os.environ.setdefault("CAPSTAN_TLS_CA", tls.cert)
    if tls.client_ca:
        os.environ.setdefault("CAPSTAN_TLS_CERT", tls.cert)
        os.environ.setdefault("CAPSTAN_TLS_KEY", tls.key)
    return {"tls_cert": tls.cert, "tls_key": tls.key, "tls_client_ca": tls.client_ca or None}
