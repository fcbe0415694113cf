"""Runs a local Capstan: the control plane in this process and the HTTP/gRPC
proxy as a child in its own session, so the proxy (and the replicas) keep
serving if the control plane crashes, and a restarted control plane reuses
them. `capstan start` runs it in the foreground; `serve.start()` spawns
`capstan start` for a script."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pathlib
import socket
import subprocess
import sys
import time

import psutil

from capstan import defaults
from capstan.client import ControlPlaneClient
from capstan.errors import Unavailable
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
        or Ctrl-C), then stops the proxy."""
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
        proxy = self._ensure_proxy()
        try:
            asyncio.run(run_control_plane(settings))
        finally:
            _stop_process(proxy, timeout_s=10)
            (self.state_dir / "proxy.json").unlink(missing_ok=True)

    def _ensure_proxy(self) -> psutil.Process:
        record = self.state_dir / "proxy.json"
        if record.exists():
            proxy = _running_proxy(json.loads(record.read_text())["pid"])
            if proxy is not None:
                return proxy  # survived a control-plane crash: keep it serving
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / "proxy.log", "ab") as log:
            process = psutil.Popen(
                [
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
                    str(logs / "access.log") if self.access_log else "",
                    *(self.tls.flags() if self.tls else []),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        record.write_text(json.dumps({"pid": process.pid}))
        return process

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
                start_new_session=detached,
            )
        self._wait_ready(time.monotonic() + timeout_s, logs / "capstan.log")

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


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def _running_proxy(pid: int) -> psutil.Process | None:
    """The proxy process `pid`, if it still runs (a pid alone may have been
    reused by now, so its command line must still say `-m proxy`)."""
    try:
        process = psutil.Process(pid)
        command = process.cmdline()
    except psutil.Error:  # gone, a zombie, or not ours to inspect
        return None
    return process if command[1:3] == ["-m", "proxy"] else None


def _stop_process(process: psutil.Process, timeout_s: float) -> None:
    """SIGTERM, then SIGKILL after the timeout; waits until it has exited (and
    is reaped, when it is our child)."""
    try:
        process.terminate()
    except psutil.NoSuchProcess:
        return
    _, alive = psutil.wait_procs([process], timeout=timeout_s)
    for survivor in alive:
        survivor.kill()
    psutil.wait_procs(alive, timeout=timeout_s)
