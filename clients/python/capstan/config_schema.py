"""Ray Serve 2.x's config-file format (`serve deploy` / `serve build`), as
pydantic models that forbid unknown fields, so a typo is named instead of
ignored. Field names and shapes follow `ray.serve.schema.ServeDeploySchema`;
Capstan adds `executor` to applications and deployments. Options Ray has
and Capstan does not act on are accepted and reported by `ignored()`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RayActorOptions(_Strict):
    runtime_env: dict[str, Any] = Field(default_factory=dict)
    num_cpus: float | None = Field(default=None, ge=0)
    num_gpus: float | None = Field(default=None, ge=0)
    memory: float | None = None
    resources: dict[str, float] = Field(default_factory=dict)
    accelerator_type: str | None = None
    label_selector: dict[str, str] | None = None
    fallback_strategy: list[dict[str, Any]] | None = None


class LoggingConfig(_Strict):
    encoding: Literal["TEXT", "JSON"] | None = None
    log_level: str | int | None = None
    logs_dir: str | None = None
    enable_access_log: bool | None = None
    additional_log_standard_attrs: list[str] | None = None


class DeploymentConfig(_Strict):
    """Overrides of one deployment's options, by its name in the graph."""

    name: str
    num_replicas: int | Literal["auto"] | None = Field(default=None)
    max_ongoing_requests: int | None = Field(default=None, gt=0)
    max_queued_requests: int | None = None
    backpressure_config: dict[str, Any] | None = None
    user_config: Any = None
    autoscaling_config: dict[str, Any] | None = None
    graceful_shutdown_wait_loop_s: float | None = Field(default=None, ge=0)
    graceful_shutdown_timeout_s: float | None = Field(default=None, ge=0)
    health_check_period_s: float | None = Field(default=None, gt=0)
    health_check_timeout_s: float | None = Field(default=None, gt=0)
    ray_actor_options: RayActorOptions | None = None
    placement_group_bundles: list[dict[str, float]] | None = None
    placement_group_strategy: str | None = None
    placement_group_bundle_label_selector: list[dict[str, str]] | None = None
    max_replicas_per_node: int | None = None
    logging_config: LoggingConfig | None = None
    request_router_config: dict[str, Any] | None = None
    gang_scheduling_config: dict[str, Any] | None = None
    deployment_actors: list[dict[str, Any]] | None = None
    rolling_update_percentage: float | None = None
    max_surge_percent: float | None = None
    # Capstan's: the executor plugin that runs this deployment's replicas.
    executor: str | None = None


class ApplicationConfig(_Strict):
    """One application: the graph at `import_path` (an app builder gets
    `args`), served at `route_prefix`, with per-deployment overrides."""

    name: str = "default"
    route_prefix: str | None = "/"
    import_path: str
    runtime_env: dict[str, Any] = Field(default_factory=dict)
    host: str | None = None
    port: int | None = None
    deployments: list[DeploymentConfig] = Field(default_factory=list)
    autoscaling_policy: dict[str, Any] | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    logging_config: LoggingConfig | None = None
    external_scaler_enabled: bool = False
    # Capstan's: the default executor of the application's deployments.
    executor: str | None = None


class ConfigFile(_Strict):
    """A whole `serve deploy` file. Only `applications` and the logging
    defaults act on Capstan; the proxy's host and port are `capstan start`'s."""

    proxy_location: str | None = None
    http_options: dict[str, Any] | None = None
    grpc_options: dict[str, Any] | None = None
    controller_options: dict[str, Any] | None = None
    logging_config: LoggingConfig | None = None
    tracing_config: dict[str, Any] | None = None
    applications: list[ApplicationConfig] = Field(default_factory=list)
    target_capacity: float | None = None


# Accepted for compatibility, not acted on; named so the user knows.
_IGNORED = {
    ConfigFile: ("proxy_location", "http_options", "grpc_options", "controller_options",
                 "tracing_config", "target_capacity"),
    ApplicationConfig: ("host", "port", "autoscaling_policy", "external_scaler_enabled"),
    DeploymentConfig: ("backpressure_config", "placement_group_bundles",
                       "placement_group_strategy", "placement_group_bundle_label_selector",
                       "max_replicas_per_node", "request_router_config",
                       "gang_scheduling_config", "deployment_actors",
                       "rolling_update_percentage", "max_surge_percent"),
    RayActorOptions: ("memory", "accelerator_type", "label_selector", "fallback_strategy"),
}  # fmt: skip


def ignored(model: BaseModel, path: tuple = ()) -> list[tuple]:
    """Paths of the fields set in `model` (and models inside it) that Capstan
    accepts but does not act on."""
    found = [(*path, f) for f in _IGNORED.get(type(model), ()) if f in model.model_fields_set]
    for name in model.model_fields_set:
        value = getattr(model, name)
        items = enumerate(value) if isinstance(value, list) else [(None, value)]
        for index, item in items:
            if isinstance(item, BaseModel):
                where = (*path, name) if index is None else (*path, name, index)
                found += ignored(item, where)
    return found
