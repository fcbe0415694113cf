"""Builds the application a config file's `applications:` entry describes,
as `serve deploy` does: import `import_path` (the current folder and the
application's working_dir on the path), call an app builder with `args`,
apply the file's per-deployment overrides, and give each deployment a
version that changes only with its code, so that re-deploying an unchanged
file restarts nothing and a changed user_config reconfigures in place."""

from __future__ import annotations

import hashlib
import importlib
import os
import pathlib
import sys
from collections.abc import Callable
from typing import Any

from capstan import build as graph
from capstan import json_values
from capstan.config_file import LoadedConfig, Path
from capstan.config_schema import ApplicationConfig, DeploymentConfig, LoggingConfig
from capstan.deployment import Deployment
from capstan.errors import InvalidSpec
from capstan.targets import as_application
from capstan.v1 import controlplane_pb2 as cp

_RUNTIME_ENV = ("env_vars", "working_dir", "pip", "conda")
# Options a file's deployment entry sets under the same name in the SDK.
_SAME_NAMES = (
    "num_replicas", "max_ongoing_requests", "max_queued_requests", "user_config",
    "autoscaling_config", "graceful_shutdown_wait_loop_s", "graceful_shutdown_timeout_s",
    "health_check_period_s", "health_check_timeout_s", "executor",
)  # fmt: skip


def application_specs(loaded: LoadedConfig) -> list[cp.ApplicationSpec]:
    """Every application of the file, built; InvalidSpec names the line."""
    return [
        application_spec(app, loaded, ("applications", index))
        for index, app in enumerate(loaded.config.applications)
    ]


def application_spec(app: ApplicationConfig, loaded: LoadedConfig, at: Path) -> cp.ApplicationSpec:
    """One application's spec, its source kept for `capstan config`."""
    env = _runtime_env(app.runtime_env, loaded, (*at, "runtime_env"))
    target = _import(app, env.get("working_dir"), loaded, (*at, "import_path"))
    names = set(graph.unique_names(target).values())
    overrides = {}
    for index, entry in enumerate(app.deployments):
        if entry.name not in names:
            raise InvalidSpec(
                f"{loaded.where((*at, 'deployments', index, 'name'))}: application "
                f"{app.name!r} has no deployment {entry.name!r}; it has {', '.join(sorted(names))}"
            )
        overrides[entry.name] = entry
    logging = app.logging_config or loaded.config.logging_config
    adjust = _adjuster(overrides, env, app.executor, logging)
    try:
        spec = graph.build(target, app.name, app.route_prefix, adjust)
    except InvalidSpec as error:
        raise InvalidSpec(f"{loaded.where(at)} ({app.name}): {error.message}") from None
    digest = _code_digest(app.import_path, env.get("working_dir"))
    for deployment in spec.deployments:
        if not deployment.HasField("version"):
            deployment.version = _version(deployment, digest)
    source = app.model_dump(exclude={"deployments", "runtime_env"}, exclude_defaults=True)
    source = {**source, **({"runtime_env": env} if env else {})}
    spec.source.CopyFrom(json_values.to_value(source, "source").struct_value)
    return spec


def _adjuster(
    overrides: dict[str, DeploymentConfig],
    env: dict[str, Any],
    executor: str | None,
    logging: LoggingConfig | None,
) -> Callable[[str, Deployment], Deployment]:
    def adjust(name: str, deployment: Deployment) -> Deployment:
        entry = overrides.get(name)
        values = {k: getattr(entry, k) for k in _SAME_NAMES} if entry else {}
        options = {k: v for k, v in values.items() if v is not None}
        if "autoscaling_config" in options and "num_replicas" not in options:
            options["num_replicas"] = None  # the file's autoscaling decides the count
        if isinstance(options.get("num_replicas"), int):
            options["autoscaling_config"] = None
        if executor and "executor" not in options:
            options["executor"] = executor
        chosen = entry.logging_config if entry and entry.logging_config else logging
        if chosen is not None:
            options["logging_config"] = chosen.model_dump(exclude_none=True)
        options["ray_actor_options"] = _actor_options(deployment, entry, env)
        path = _import_path(deployment.func_or_class, env.get("working_dir"))
        return deployment.options(path, **options)  # path None keeps the code as it is

    return adjust


def _actor_options(
    deployment: Deployment, entry: DeploymentConfig | None, env: dict[str, Any]
) -> dict[str, Any]:
    """The code's ray_actor_options, the file's over them; runtime_env keys
    inherit the application's (Ray's rule), env_vars merged by name."""
    merged = dict(deployment.ray_actor_options or {})
    own = entry.ray_actor_options if entry else None
    if own is not None:
        merged |= own.model_dump(include={"num_cpus", "num_gpus", "resources"}, exclude_unset=True)
    runtime_env = {**env, **(merged.get("runtime_env") or {})}
    if own is not None:
        runtime_env |= own.runtime_env
    runtime_env["env_vars"] = {
        **env.get("env_vars", {}),
        **(merged.get("runtime_env") or {}).get("env_vars", {}),
        **(own.runtime_env.get("env_vars", {}) if own else {}),
    }
    merged["runtime_env"] = {k: v for k, v in runtime_env.items() if v}
    return merged


def _import_path(func_or_class: Any, working_dir: str | None) -> str | None:
    """`module:attribute` naming the code (or the deployment wrapping it)
    when the module lies in the working_dir the replicas get: then they
    import it from there as Ray's do, instead of receiving a pickle whose
    bytes differ with every process that makes it."""
    module = sys.modules.get(getattr(func_or_class, "__module__", ""))
    file = getattr(module, "__file__", None)
    if not working_dir or not file or not pathlib.Path(file).resolve().is_relative_to(working_dir):
        return None
    for attribute, value in vars(module).items():
        if value is func_or_class or getattr(value, "func_or_class", None) is func_or_class:
            return f"{module.__name__}:{attribute}"
    return None


def _runtime_env(env: dict[str, Any], loaded: LoadedConfig, at: Path) -> dict[str, Any]:
    """The application's runtime_env with working_dir an absolute folder.
    A local path (Capstan's) or a `local://` URI is shipped as it is today;
    remote URIs are Ray's package store, which Capstan does not have."""
    for key in env:
        if key not in _RUNTIME_ENV:
            raise InvalidSpec(
                f"{loaded.where((*at, key))}: runtime_env.{key} is not supported by Capstan; "
                f"supported: {', '.join(_RUNTIME_ENV)}"
            )
    result = dict(env)
    working_dir = str(env.get("working_dir") or "")
    if working_dir:
        local = working_dir.removeprefix("local://")
        if "://" in local:
            raise InvalidSpec(
                f"{loaded.where((*at, 'working_dir'))}: remote working_dir {working_dir!r} is not "
                "supported by Capstan; use a local folder (a path or local:///path)"
            )
        folder = pathlib.Path(local).expanduser().resolve()
        if not folder.is_dir():
            raise InvalidSpec(
                f"{loaded.where((*at, 'working_dir'))}: working_dir {str(folder)!r} is not a folder"
            )
        result["working_dir"] = str(folder)
    return result


def _import(app: ApplicationConfig, working_dir: str | None, loaded: LoadedConfig, at: Path):
    """The bound application at `import_path`, as `serve run` finds it."""
    for folder in (os.getcwd(), working_dir):
        if folder and folder not in sys.path:
            sys.path.insert(0, folder)
    module_name, _, attribute = app.import_path.replace(":", ".").rpartition(".")
    if not module_name:
        raise InvalidSpec(f"{loaded.where(at)}: import_path must look like module:attribute")
    try:
        value = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        message = f"cannot import {app.import_path!r}: {error}"
        raise InvalidSpec(f"{loaded.where(at)}: {message}") from None
    return as_application(value, app.args, app.import_path)


def _code_digest(import_path: str, working_dir: str | None) -> bytes:
    """What the pickled code may not show: the module's source file and the
    Python files of the working_dir shipped (not its other files, such as
    logs or data written there while it runs, which would restart replicas
    on every deploy)."""
    digest = hashlib.sha256()
    module = sys.modules.get(import_path.replace(":", ".").rpartition(".")[0])
    files = [pathlib.Path(module.__file__)] if module and module.__file__ else []
    if working_dir:
        root = pathlib.Path(working_dir)
        files += sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
    for file in files:
        digest.update(str(file).encode() + b"\0" + file.read_bytes())
    return digest.digest()


def _version(spec: Any, digest: bytes) -> str:
    """A version from what needs new processes to change: the source files
    (`digest`), constructor arguments, replica options and executor, never
    user_config or counts. Not the pickled code itself: a class pickled by
    value differs byte for byte between two processes that build it."""
    parts = spec.name.encode() + b"\0" + spec.code.import_path.encode()
    parts += spec.init_arguments.SerializeToString(deterministic=True)
    parts += spec.replica_options.SerializeToString(deterministic=True)
    parts += spec.executor.encode() + digest
    return hashlib.sha256(parts).hexdigest()[:12]
