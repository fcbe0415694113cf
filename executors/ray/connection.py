"""This process's one connection to Ray.

`ray.init` is per process, so every RayExecutor in it shares one connection:
the first to connect opens it, the last to close it shuts it down. A
connection that something else in the process opened is borrowed and never
shut down by us.

Ray's driver ends its whole process when the cluster's GCS has been
unreachable for 60 s (gcs_rpc_server_reconnect_timeout_s). Here the driver
is the control plane, which must outlive any cluster, so that timeout is
raised to a day: while Ray is away, calls fail at their deadlines instead.

Ray 2.60 turns token auth on by default and reads the token from
RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token, in that order, in
this process and every Ray process it starts (they inherit the
environment). A Ray the executor starts is isolated from any other on the
machine: a fresh token in RAY_AUTH_TOKEN and a temp dir of its own, so a
~/.ray/auth_token that another Ray left is never read, nor written.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
import shutil
import tempfile
import threading
from typing import Any

import ray

from executors.base import ExecutorError
from executors.ray.calls import BlockingCalls
from executors.ray.settings import RaySettings

log = logging.getLogger("capstan.executors.ray")

_GCS_PATIENCE = {"RAY_gcs_rpc_server_reconnect_timeout_s": str(24 * 3600)}


@dataclasses.dataclass
class _Shared:
    """What this process is connected to, and how many executors use it."""

    address: str | None = None
    namespace: str = ""
    users: int = 0
    # We called ray.init, so the last user calls ray.shutdown.
    is_ours: bool = False
    # The temp dir of a Ray we started, removed after it.
    temp_dir: str | None = None


_CLIENT_SERVER_FAILED = "Starting Ray client server failed"

_lock = threading.Lock()
_shared = _Shared()


async def connect(settings: RaySettings, calls: BlockingCalls) -> None:
    """Joins (or opens) the process's connection. Raises `ExecutorError`
    when Ray cannot be reached in time or the process is already connected
    to another cluster or namespace. An attempt that succeeds after its
    deadline is left again at once."""
    where = settings.address or "a local Ray"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.connect_timeout_s
    delay_s = 0.5
    while True:
        try:
            await calls.run(
                _join,
                settings,
                timeout_s=max(0.1, deadline - loop.time()),
                what=f"connecting to {where}",
                undo=lambda _: _leave(),
            )
            return
        except ExecutorError:
            raise
        except Exception as error:
            # Ray Client's proxier starts a server process per client and,
            # on a busy machine, sometimes gives up on it: trying again helps.
            if _CLIENT_SERVER_FAILED in str(error) and loop.time() + delay_s < deadline:
                log.warning("Ray at %s could not start a client server; retrying", where)
                await asyncio.sleep(delay_s)
                delay_s = min(2 * delay_s, 5.0)
                continue
            raise ExecutorError(
                f"cannot connect to Ray at {where}: {type(error).__name__}: {error}"
            ) from error


async def disconnect(settings: RaySettings, calls: BlockingCalls) -> None:
    """Leaves the connection; the last user shuts it down if it is ours."""
    await calls.run(_leave, timeout_s=settings.connect_timeout_s, what="disconnecting")


def _join(settings: RaySettings) -> None:
    with _lock:
        if _shared.users == 0:
            _open(settings)
        elif (_shared.address, _shared.namespace) != (settings.address, settings.namespace):
            raise ExecutorError(
                f"this process is connected to Ray at {_shared.address or 'a local Ray'} "
                f"(namespace {_shared.namespace!r}); one process can use only one Ray "
                "cluster and namespace",
                retryable=False,
            )
        _shared.users += 1


def _open(settings: RaySettings) -> None:
    if ray.is_initialized():
        namespace = ray.get_runtime_context().namespace
        if namespace != settings.namespace:
            raise ExecutorError(
                f"Ray is already initialised in this process with namespace {namespace!r}, "
                f"not {settings.namespace!r}",
                retryable=False,
            )
        _shared.is_ours = False
    else:
        for name, value in _GCS_PATIENCE.items():
            os.environ.setdefault(name, value)
        _use_auth(_auth_environment(settings))
        arguments = _init_arguments(settings)
        ray.init(**arguments)
        _shared.is_ours, _shared.temp_dir = True, arguments.get("_temp_dir")
    _shared.address, _shared.namespace = settings.address, settings.namespace


def _auth_environment(settings: RaySettings) -> dict[str, str]:
    """RAY_AUTH_* for this process and the Ray processes it starts: our own
    token for our own Ray; the configured file's token for a cluster; Ray's
    own variables and defaults otherwise."""
    if settings.is_local:
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    if settings.auth_token_file is not None:
        token = settings.auth_token_file.read_text().strip()
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    return {}


def _use_auth(environment: dict[str, str]) -> None:
    """Sets RAY_AUTH_*, then makes Ray read them again: it caches the mode
    and the token once read (`import ray` reads the mode)."""
    if not environment:
        return
    os.environ.update(environment)
    os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def _init_arguments(settings: RaySettings) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "address": settings.address,
        "namespace": settings.namespace,
        # Replica logs stay in Ray's session logs rather than in ours.
        "log_to_driver": False,
        "logging_level": logging.WARNING,
    }
    if settings.is_local:
        arguments["include_dashboard"] = False
        # Short: Ray puts socket paths under it.
        arguments["_temp_dir"] = tempfile.mkdtemp(prefix="capstan-ray-", dir="/tmp")
        if settings.num_cpus is not None:
            arguments["num_cpus"] = settings.num_cpus
    return arguments


def _leave() -> None:
    with _lock:
        if _shared.users == 0:
            return
        _shared.users -= 1
        if _shared.users > 0:
            return
        if _shared.is_ours:
            # Also ends a local Ray the executor started, and its replicas.
            ray.shutdown()
        if _shared.temp_dir is not None:
            shutil.rmtree(_shared.temp_dir, ignore_errors=True)
        _shared.address, _shared.namespace, _shared.is_ours = None, "", False
        _shared.temp_dir = None
