"""The Ray Serve deployment API, on Capstan: port an app by changing
`from ray import serve` to `from capstan import serve`, and
`ray.get(handle.remote())` to `handle.remote().result()`."""

from __future__ import annotations

import atexit
import contextlib
import logging
import signal
import threading
from typing import Any

from capstan import defaults, metrics, progress
from capstan import options as _options
from capstan.batching import batch
from capstan.build import build
from capstan.client import ControlPlaneClient, default_address
from capstan.context import ReplicaContext, current_replica_context, get_multiplexed_model_id
from capstan.deployment import Application, Deployment, deployment, from_stored
from capstan.errors import CapstanError, NotFound, Unavailable
from capstan.handle import DeploymentHandle, DeploymentResponse, DeploymentResponseGenerator
from capstan.ingress import ingress
from capstan.multiplex import multiplexed
from capstan.schema import LoggingConfig, ServeStatus, serve_status

log = logging.getLogger("capstan")

# Ray Serve's name for an application that serve.run is not given a name for.
DEFAULT_APP_NAME = "default"

__all__ = [
    "Application",
    "Deployment",
    "DeploymentHandle",
    "DeploymentResponse",
    "DeploymentResponseGenerator",
    "batch",
    "connect",
    "delete",
    "deployment",
    "get_app_handle",
    "get_deployment",
    "get_deployment_handle",
    "get_multiplexed_model_id",
    "get_replica_context",
    "ingress",
    "list_deployments",
    "metrics",
    "multiplexed",
    "run",
    "shutdown",
    "start",
    "status",
]

_client: ControlPlaneClient | None = None
_applied = 0  # serve.run and Deployment.deploy calls, for `capstan run script.py`
_embedded = None  # the LocalServices this script started, if any
_lock = threading.Lock()


def start(
    detached: bool = False,
    http_options: dict | None = None,
    grpc_options: dict | None = None,
    *,
    address: str | None = None,
    state_dir: str = ".capstan",
) -> ControlPlaneClient:
    """Connects to the control plane at `address` ($CAPSTAN_ADDRESS, else
    127.0.0.1:8765), or starts one here with its HTTP proxy (port 8000 unless
    `http_options={"port": ...}`; gRPC 9000 unless `grpc_options`). An
    embedded control plane is shut down when the script exits unless
    `detached=True`."""
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
                # A script's own Capstan takes any free metrics port (its log
                # says which) rather than fail when the default one is taken.
                metrics_port=int(http.get("metrics_port", 0)),
                grpc_port=int((grpc_options or {}).get("port", defaults.GRPC_PORT)),
            )
            services.spawn(detached=detached)
            if not detached:
                _embedded = services
                atexit.register(_shutdown_at_exit)
        _client = client
        return client


def connect() -> ControlPlaneClient:
    """The client for this script's control plane, started as `start()` would."""
    return _client if _client is not None else start()


def run(
    target: Application | Deployment,
    blocking: bool = False,
    name: str = DEFAULT_APP_NAME,
    route_prefix: Any = _options.DEFAULT,
    logging_config: Any = None,
    _local_testing_mode: bool = False,
) -> DeploymentHandle:
    """Deploys a bound graph as the application `name`, replacing the one of
    that name if it runs, waits until every deployment is up, and returns a
    handle to the ingress. `route_prefix` defaults to the ingress's own, else
    "/"; None keeps it off HTTP. `blocking=True` then serves until Ctrl-C.
    `_local_testing_mode=True` runs the graph in this process, without a
    control plane, for unit tests."""
    if isinstance(target, Deployment):
        target = target.bind()
    if not isinstance(target, Application):
        raise TypeError(
            f"serve.run takes a bound deployment (Deployment.bind(...)), "
            f"not {type(target).__name__}"
        )
    if logging_config is not None:
        LoggingConfig.of(logging_config)  # validated; replicas log at INFO as text
    if _local_testing_mode:
        from capstan.local_testing import run_locally

        return run_locally(target, name)
    note_applied()
    client = connect()
    with progress.reporting(client, application=name):
        reply = client.apply_application(build(target, name, route_prefix), wait=True)
    for warning in reply.warnings:
        log.warning("%s", warning)
    handle = DeploymentHandle(reply.application.ingress, app_name=name)
    if blocking:
        _serve_forever()
    return handle


def _serve_forever() -> None:
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()


def note_applied() -> None:
    global _applied
    _applied += 1


def applied_count() -> int:
    """How many deploys this process made (serve.run and Deployment.deploy)."""
    return _applied


def status() -> ServeStatus:
    """Every application with its deployments' states, as Ray's serve.status()."""
    return serve_status(connect().list_applications())


def get_app_handle(name: str) -> DeploymentHandle:
    """A handle to the ingress of application `name` (raises capstan.NotFound)."""
    app = connect().get_application(name)
    return DeploymentHandle(app.ingress, app_name=name)


def get_replica_context() -> ReplicaContext:
    """The replica this code runs in (its app, deployment and id). Raises
    RuntimeError outside a replica."""
    context = current_replica_context()
    if context is None:
        raise RuntimeError("get_replica_context() may only be called from within a deployment")
    return context


def list_deployments() -> dict[str, Deployment]:
    """Every deployment on the control plane, by name."""
    return {d.id or d.spec.name: from_stored(d) for d in connect().list()}


def get_deployment(name: str) -> Deployment:
    """A deployment by name (raises capstan.NotFound), usable to redeploy it
    or get a handle to it."""
    return from_stored(connect().get(name))


def get_deployment_handle(deployment_name: str, app_name: str | None = None) -> DeploymentHandle:
    """A handle to a deployment: of application `app_name` (default: the
    application this replica belongs to, else "default"), or one deployed on
    its own with `.deploy()` when no application has it."""
    if app_name is None:
        context = current_replica_context()
        app_name = context.app_name if context is not None else DEFAULT_APP_NAME
        if context is None or not app_name:
            try:
                connect().get(f"{app_name}.{deployment_name}")
            except NotFound:
                app_name = ""  # a 1.x deployment, by its name alone
    return DeploymentHandle(deployment_name, app_name=app_name)


def delete(name: str, _blocking: bool = True) -> None:
    """Removes the application `name` with all its deployments, or (1.x) the
    deployment `name` with its replicas and route."""
    client = connect()
    try:
        client.delete_application(name, wait=_blocking)
    except NotFound:
        client.delete(name, wait=_blocking)


def _shutdown_at_exit() -> None:
    """The embedded control plane goes with the script, however the script
    ends (Ctrl-C included), without a traceback: a second Ctrl-C while the
    replicas drain is ignored rather than leaving them behind."""
    with contextlib.suppress(ValueError):  # signals belong to the main thread
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        shutdown()
    except CapstanError as error:
        log.warning("capstan did not shut down cleanly: %s", error)


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
