"""Writes applications in Ray Serve's config-file format: what `capstan
build` makes from code and `capstan config` prints of what is applied. Only
options that are set are written, under Ray Serve's names."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import yaml
from google.protobuf import json_format

from capstan import json_values
from capstan.v1 import controlplane_pb2 as cp
from capstan.v1 import deployment_pb2 as pb

# Optional scalar fields, as the spec names them -> as the file does.
# What `capstan config` shows for an application built from code, not a file.
_FROM_CODE = {"import_path": "(built from code)"}
_SCALARS = {
    "num_replicas": "num_replicas",
    "max_concurrent_queries": "max_ongoing_requests",
    "max_queued_requests": "max_queued_requests",
    "graceful_shutdown_wait_loop_s": "graceful_shutdown_wait_loop_s",
    "graceful_shutdown_timeout_s": "graceful_shutdown_timeout_s",
    "health_check_period_s": "health_check_period_s",
    "health_check_timeout_s": "health_check_timeout_s",
}


def render(applications: Iterable[Mapping[str, Any]]) -> str:
    """The YAML text of a config file with these application entries."""
    return yaml.safe_dump({"applications": list(applications)}, sort_keys=False)


def application_entry(
    name: str, route_prefix: str | None, source: Mapping[str, Any], deployments: Iterable
) -> dict[str, Any]:
    """An `applications:` entry: `source` holds import_path, args,
    runtime_env (and executor, logging_config) as the file had them."""
    entry: dict[str, Any] = {"name": name, "route_prefix": route_prefix}
    entry["import_path"] = source.get("import_path", "")
    for key in ("args", "runtime_env", "executor", "logging_config"):
        if source.get(key):
            entry[key] = source[key]
    app_env = source.get("runtime_env") or {}
    entry["deployments"] = [deployment_entry(spec, app_env) for spec in deployments]
    return entry


def stored_entry(app: cp.Application) -> dict[str, Any]:
    """The entry of an application as the control plane holds it."""
    is_from_file = app.HasField("source")
    source = json_values.to_python(app.source) if is_from_file else _FROM_CODE
    specs = [d.spec for d in app.deployments]
    return application_entry(app.name, app.route_prefix or None, source, specs)


def deployment_entry(spec: pb.DeploymentSpec, app_env: Mapping[str, Any]) -> dict[str, Any]:
    """A `deployments:` entry for `spec`, leaving out the runtime_env it
    inherits from its application."""
    entry: dict[str, Any] = {"name": spec.name}
    for field, key in _SCALARS.items():
        if spec.HasField(field):
            entry[key] = getattr(spec, field)
    if spec.HasField("user_config"):
        entry["user_config"] = json_values.to_python(spec.user_config)
    if spec.HasField("autoscaling_config") and spec.autoscaling_config.ListFields():
        entry["autoscaling_config"] = json_format.MessageToDict(
            spec.autoscaling_config, preserving_proto_field_name=True
        )
    actor = _actor_options(spec.replica_options, app_env)
    if actor:
        entry["ray_actor_options"] = actor
    if spec.HasField("logging_config"):
        entry["logging_config"] = json_format.MessageToDict(
            spec.logging_config, preserving_proto_field_name=True
        )
    if spec.executor:
        entry["executor"] = spec.executor
    return entry


def _actor_options(options: pb.ReplicaOptions, app_env: Mapping[str, Any]) -> dict[str, Any]:
    actor: dict[str, Any] = {}
    if options.HasField("num_cpus"):
        actor["num_cpus"] = options.num_cpus
    if options.num_gpus:
        actor["num_gpus"] = options.num_gpus
    if options.resources:
        actor["resources"] = dict(options.resources)
    inherited = app_env.get("env_vars") or {}
    env: dict[str, Any] = {
        "env_vars": {
            k: v for k, v in options.runtime_env.env_vars.items() if inherited.get(k) != v
        },
        "working_dir": options.runtime_env.working_dir,
        "pip": list(options.runtime_env.pip),
        "conda": options.runtime_env.conda,
    }
    env = {k: v for k, v in env.items() if v and v != app_env.get(k)}
    if env:
        actor["runtime_env"] = env
    return actor
