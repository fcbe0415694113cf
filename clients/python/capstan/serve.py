"""The Ray Serve deployment API, on Capstan: port an app by changing
`from ray import serve` to `from capstan import serve`, and
`ray.get(handle.remote())` to `handle.remote().result()`."""

from __future__ import annotations

import atexit
import contextlib
import threading
from typing import Any

from capstan import defaults
from capstan import options as _options
from capstan.client import ControlPlaneClient, default_address
from capstan.deployment import Application, Deployment, deployment, from_stored, ingress
from capstan.errors import Unavailable
from capstan.handle import DeploymentHandle, DeploymentResponse, DeploymentResponseGenerator

__all__ = [
    "Application",
    "Deployment",
    "DeploymentHandle",
    "DeploymentResponse",
    "DeploymentResponseGenerator",
    "connect",
    "delete",
    "deployment",
    "get_deployment",
    "get_deployment_handle",
    "ingress",
    "list_deployments",
    "run",
    "shutdown",
    "start",
]

_client: ControlPlaneClient | None = None
_embedded = None  # the LocalServices this script started, if any
_lock = threading.Lock()


def start(
    detached: bool = False,
    http_options: dict | None = None,
    *,
    address: str | None = None,
    state_dir: str = ".capstan",
) -> ControlPlaneClient:
    """Connects to the control plane at `address` ($CAPSTAN_ADDRESS, else
    127.0.0.1:8765), or starts one here with its HTTP proxy (port 8000 unless
    `http_options={"port": ...}`). An embedded control plane is shut down when
    the script exits unless `detached=True`."""
    global _client, _embedded
    with _lock:
        if _client is not None:
            return _client
        client = ControlPlaneClient(address or default_address())
        if not client.is_reachable(timeout_s=0.3):
            from capstan.launcher import LocalServices

            http = http_options or {}
            services = LocalServices(
                state_dir=state_dir,
                address=client.address,
                http_host=http.get("host", "127.0.0.1"),
                http_port=int(http.get("port", defaults.HTTP_PORT)),
            )
            services.spawn(detached=detached)
            if not detached:
                _embedded = services
                atexit.register(shutdown)
        _client = client
        return client


def connect() -> ControlPlaneClient:
    """The client for this script's control plane, started as `start()` would."""
    return _client if _client is not None else start()


def run(
    target: Application | Deployment,
    *,
    name: str | None = None,
    route_prefix: Any = _options.DEFAULT,
    blocking: bool = True,
) -> DeploymentHandle:
    """Deploys a bound application (or a deployment) and returns its handle."""
    if isinstance(target, Deployment):
        target = target.bind()
    overrides: dict[str, Any] = {}
    if name is not None:
        overrides["name"] = name
    if route_prefix is not _options.DEFAULT:
        overrides["route_prefix"] = route_prefix
    if overrides:
        target = Application(target.deployment.options(**overrides), target.args, target.kwargs)
    return target.deploy(blocking=blocking)


def list_deployments() -> dict[str, Deployment]:
    """Every deployment on the control plane, by name."""
    return {d.spec.name: from_stored(d) for d in connect().list()}


def get_deployment(name: str) -> Deployment:
    """A deployment by name (raises capstan.NotFound), usable to redeploy it
    or get a handle to it."""
    return from_stored(connect().get(name))


def get_deployment_handle(name: str) -> DeploymentHandle:
    """A handle to a deployment by name, without fetching its definition."""
    return DeploymentHandle(name)


def delete(name: str) -> None:
    """Removes a deployment, its replicas and its route."""
    connect().delete(name)


def shutdown() -> None:
    """Removes every deployment and stops the control plane and its proxy."""
    global _client, _embedded
    from capstan.runtime import close_runtime

    with _lock:
        close_runtime()
        client = _client or ControlPlaneClient()
        with contextlib.suppress(Unavailable):  # nothing was running
            client.shutdown()
        if _embedded is not None:
            _embedded.wait_stopped(timeout_s=60)
        client.close()
        _client = _embedded = None
