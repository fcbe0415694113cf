"""Turns the Ray Serve deployment options a user writes into a
capstan.v1.DeploymentSpec. Only representation happens here (types, JSON,
pickling); the control plane validates values, once, and names the field."""

from __future__ import annotations

import collections
import difflib
import hashlib
import inspect
import io
import types
from collections.abc import Mapping
from typing import Any

import cloudpickle

from capstan import json_values
from capstan.errors import InvalidSpec
from capstan.internal.v1 import replica_pb2
from capstan.schema import LoggingConfig
from capstan.v1 import deployment_pb2 as pb

# Ray Serve spells some options in more than one way across versions.
ALIASES = {
    "max_ongoing_requests": "max_concurrent_queries",
    "_autoscaling_config": "autoscaling_config",
    "_graceful_shutdown_wait_loop_s": "graceful_shutdown_wait_loop_s",
    "_graceful_shutdown_timeout_s": "graceful_shutdown_timeout_s",
    "_health_check_period_s": "health_check_period_s",
    "_health_check_timeout_s": "health_check_timeout_s",
}

OPTIONS = (
    "name",
    "version",
    "prev_version",
    "num_replicas",
    "init_args",
    "init_kwargs",
    "route_prefix",
    "ray_actor_options",
    "user_config",
    "max_concurrent_queries",
    "max_queued_requests",
    "autoscaling_config",
    "graceful_shutdown_wait_loop_s",
    "graceful_shutdown_timeout_s",
    "health_check_period_s",
    "health_check_timeout_s",
    "logging_config",
    "executor",
    "request_timeout_s",
)

SCALARS = (
    "version",
    "prev_version",
    "num_replicas",
    "max_concurrent_queries",
    "max_queued_requests",
    "graceful_shutdown_wait_loop_s",
    "graceful_shutdown_timeout_s",
    "health_check_period_s",
    "health_check_timeout_s",
    "request_timeout_s",
)
_ACTOR_OPTIONS = ("num_cpus", "num_gpus", "resources", "runtime_env")
_RUNTIME_ENV = ("env_vars", "working_dir", "pip", "conda")
_AUTOSCALING_ALIASES = {
    "target_ongoing_requests": "target_num_ongoing_requests_per_replica",
    # Ray Serve's earlier names for the scaling factors.
    "smoothing_factor": "upscaling_factor",
    "upscale_smoothing_factor": "upscaling_factor",
    "downscale_smoothing_factor": "downscaling_factor",
}
# What num_replicas="auto" means in Ray Serve 2.x.
AUTO_AUTOSCALING = {"min_replicas": 1, "max_replicas": 100, "target_ongoing_requests": 2}


class _Default:
    """The route prefix nobody chose: "/<name>"."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT = _Default()


def normalize(options: Mapping[str, Any]) -> dict[str, Any]:
    """Options with aliases resolved; unknown names raise InvalidSpec."""
    result = {}
    for key, value in options.items():
        key = ALIASES.get(key, key)
        if key not in OPTIONS:
            raise InvalidSpec(_unknown("deployment option", key, [*OPTIONS, *ALIASES]))
        result[key] = value
    if result.get("logging_config") is not None:  # checked here, where the user wrote it
        result["logging_config"] = LoggingConfig.of(result["logging_config"])
    if result.get("num_replicas") == "auto":
        result.pop("num_replicas")
        result["autoscaling_config"] = {
            **AUTO_AUTOSCALING,
            **(result.get("autoscaling_config") or {}),
        }
    return result


def _unknown(what: str, key: str, known: list[str]) -> str:
    """`unknown X 'k'; did you mean ...?` naming the close matches, else all."""
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    if close:
        return f"unknown {what} {key!r}; did you mean {' or '.join(map(repr, close))}?"
    public = sorted(k for k in known if not k.startswith("_"))
    return f"unknown {what} {key!r}; known: {', '.join(public)}"


def to_spec(code: pb.Code, options: Mapping[str, Any]) -> pb.DeploymentSpec:
    """The wire spec for a deployment's code and normalised options."""
    spec = pb.DeploymentSpec(name=options["name"], code=code)
    try:
        for key in SCALARS:
            if options.get(key) is not None:
                setattr(spec, key, options[key])
    except (TypeError, ValueError) as error:
        raise InvalidSpec(f"{key} has the wrong type: {error}") from None
    route_prefix = options.get("route_prefix", DEFAULT)
    if route_prefix is None:
        spec.route_prefix = ""
    elif route_prefix is not DEFAULT:
        spec.route_prefix = str(route_prefix)
    if options.get("user_config") is not None:
        spec.user_config.CopyFrom(json_values.to_value(options["user_config"], "user_config"))
    if options.get("logging_config") is not None:
        spec.logging_config.CopyFrom(LoggingConfig.of(options["logging_config"]).to_proto())
    if options.get("autoscaling_config") is not None:
        spec.autoscaling_config.CopyFrom(_autoscaling(options["autoscaling_config"]))
    spec.replica_options.CopyFrom(_replica_options(options.get("ray_actor_options") or {}))
    if "init_args" in options or "init_kwargs" in options or "_stored_spec" not in options:
        set_init_arguments(spec, options.get("init_args"), options.get("init_kwargs"))
    else:  # a Deployment read back from the control plane keeps its arguments
        stored = options["_stored_spec"]
        spec.init_arguments.CopyFrom(stored.init_arguments)
        if stored.HasField("sdk_init_arguments"):
            spec.sdk_init_arguments.CopyFrom(stored.sdk_init_arguments)
    spec.executor = options.get("executor") or ""
    return spec


def set_init_arguments(spec: pb.DeploymentSpec, args: Any, kwargs: Any) -> None:
    """Constructor arguments as JSON `init_arguments` when every one is plain
    JSON, so that clients in any language read them back; else pickled into
    `sdk_init_arguments` (handles, objects: Python-to-Python)."""
    if args is not None and not isinstance(args, list | tuple):
        raise InvalidSpec(f"init_args must be a tuple or list, got {type(args).__name__}")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise InvalidSpec(f"init_kwargs must be a dict, got {type(kwargs).__name__}")
    args, kwargs = tuple(args or ()), dict(kwargs or {})
    if json_values.is_plain_json(list(args)) and json_values.is_plain_json(kwargs):
        spec.init_arguments.CopyFrom(json_values.arguments_of(args, kwargs, "init_arguments"))
        return
    encoded = replica_pb2.EncodedArguments(
        encoding=replica_pb2.ENCODING_PICKLE,
        args=_dumps(args) if args else b"",
        kwargs=_dumps(kwargs) if kwargs else b"",
    )
    spec.sdk_init_arguments.Pack(encoded)


def code_of(func_or_class: Any) -> pb.Code:
    """User code as the wire carries it: an import path string as-is,
    anything else cloudpickled (by value when defined in a script) into a
    PythonObject in `sdk_object`."""
    if isinstance(func_or_class, str):
        return pb.Code(import_path=func_or_class)
    try:
        pickled = replica_pb2.PythonObject(cloudpickle=_dumps(func_or_class))
    except Exception as error:
        name = getattr(func_or_class, "__name__", repr(func_or_class))
        raise InvalidSpec(f"cannot pickle {name} to ship it to replicas: {error}") from None
    code = pb.Code(fingerprint=_fingerprint(func_or_class))
    code.sdk_object.Pack(pickled)
    return code


def python_object(code: pb.Code) -> Any:
    """The class or function `code` names or holds: an import path as-is,
    an SDK object unpickled. Raises InvalidSpec for another SDK's object."""
    if code.WhichOneof("source") != "sdk_object":
        return code.import_path
    pickled = replica_pb2.PythonObject()
    if not code.sdk_object.Unpack(pickled):
        raise InvalidSpec(
            f"code.sdk_object holds a {code.sdk_object.type_url!r}, not Python code", "code"
        )
    return cloudpickle.loads(pickled.cloudpickle)


def _fingerprint(func_or_class: Any) -> str:
    """A digest of the code's source, stable across processes ("" when the
    source cannot be read, e.g. code typed at a prompt)."""
    try:
        source = inspect.getsource(func_or_class)
    except (OSError, TypeError):
        return ""
    name = f"{func_or_class.__module__}.{func_or_class.__qualname__}\0"
    return hashlib.sha256((name + source).encode()).hexdigest()


def _code_keeping_filename(code: types.CodeType) -> tuple:
    """cloudpickle's reduction of a code object, with its file name put back:
    cloudpickle writes "<dynamic-code>" instead (for payloads that do not
    depend on where the code was defined), and a traceback in a replica
    would then not name the user's file. Line numbers travel either way."""
    rebuild, args = cloudpickle.cloudpickle._code_reduce(code)
    return rebuild, tuple(code.co_filename if arg == "<dynamic-code>" else arg for arg in args)


class _Pickler(cloudpickle.Pickler):
    dispatch_table = collections.ChainMap(
        {types.CodeType: _code_keeping_filename}, cloudpickle.Pickler.dispatch_table
    )


def _dumps(value: Any) -> bytes:
    with io.BytesIO() as buffer:
        _Pickler(buffer).dump(value)
        return buffer.getvalue()


def _autoscaling(config: Any) -> pb.AutoscalingConfig:
    if not isinstance(config, Mapping):
        config = getattr(config, "__dict__", config)
    if not isinstance(config, Mapping):
        raise InvalidSpec("autoscaling_config must be a dict")
    message = pb.AutoscalingConfig()
    for key, value in config.items():
        key = _AUTOSCALING_ALIASES.get(key, key)
        if key not in pb.AutoscalingConfig.DESCRIPTOR.fields_by_name:
            known = [*pb.AutoscalingConfig.DESCRIPTOR.fields_by_name, *_AUTOSCALING_ALIASES]
            raise InvalidSpec(_unknown("autoscaling_config option", key, known))
        if value is not None:
            try:
                setattr(message, key, value)
            except (TypeError, ValueError) as error:
                raise InvalidSpec(f"autoscaling_config.{key} has the wrong type: {error}") from None
    return message


def _replica_options(actor_options: Mapping[str, Any]) -> pb.ReplicaOptions:
    unknown = set(actor_options) - set(_ACTOR_OPTIONS)
    if unknown:
        raise InvalidSpec(
            f"ray_actor_options does not support {', '.join(sorted(unknown))}; "
            f"supported: {', '.join(_ACTOR_OPTIONS)}"
        )
    env = actor_options.get("runtime_env") or {}
    unknown = set(env) - set(_RUNTIME_ENV)
    if unknown:
        raise InvalidSpec(
            f"runtime_env does not support {', '.join(sorted(unknown))}; "
            f"supported: {', '.join(_RUNTIME_ENV)}"
        )
    try:
        options = pb.ReplicaOptions(
            num_gpus=actor_options.get("num_gpus") or 0,
            resources=actor_options.get("resources") or {},
            runtime_env=pb.RuntimeEnv(
                env_vars={str(k): str(v) for k, v in (env.get("env_vars") or {}).items()},
                working_dir=str(env.get("working_dir") or ""),
                pip=list(env.get("pip") or []),
                conda=str(env.get("conda") or ""),
            ),
        )
        if actor_options.get("num_cpus") is not None:
            options.num_cpus = actor_options["num_cpus"]
    except (TypeError, ValueError) as error:
        raise InvalidSpec(f"ray_actor_options has a value of the wrong type: {error}") from None
    return options
