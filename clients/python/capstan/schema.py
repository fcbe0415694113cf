"""Counterparts of `ray.serve.schema`: the status `serve.status()` returns and
the `LoggingConfig` deployments and `serve.run` accept, with Ray's names and
values so code that reads them ports unchanged."""

from __future__ import annotations

import dataclasses
import enum
import logging
from typing import Any

from capstan.errors import InvalidSpec
from capstan.v1 import controlplane_pb2 as cp
from capstan.v1 import deployment_pb2


class ApplicationStatus(enum.StrEnum):
    NOT_STARTED = "NOT_STARTED"
    DEPLOYING = "DEPLOYING"
    DEPLOY_FAILED = "DEPLOY_FAILED"
    RUNNING = "RUNNING"
    UNHEALTHY = "UNHEALTHY"
    DELETING = "DELETING"


class DeploymentStatus(enum.StrEnum):
    UPDATING = "UPDATING"
    HEALTHY = "HEALTHY"
    UNHEALTHY = "UNHEALTHY"
    DEPLOY_FAILED = "DEPLOY_FAILED"
    UPSCALING = "UPSCALING"
    DOWNSCALING = "DOWNSCALING"


class ReplicaState(enum.StrEnum):
    PENDING_ALLOCATION = "PENDING_ALLOCATION"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"


@dataclasses.dataclass(frozen=True)
class DeploymentStatusOverview:
    status: DeploymentStatus
    replica_states: dict[str, int]
    message: str = ""
    status_trigger: str = ""


@dataclasses.dataclass(frozen=True)
class ApplicationStatusOverview:
    status: ApplicationStatus
    message: str
    deployments: dict[str, DeploymentStatusOverview]
    route_prefix: str | None = None
    last_deployed_time_s: float = 0.0


@dataclasses.dataclass(frozen=True)
class ServeStatus:
    """What `serve.status()` returns: every application by name."""

    applications: dict[str, ApplicationStatusOverview] = dataclasses.field(default_factory=dict)
    proxies: dict[str, str] = dataclasses.field(default_factory=dict)
    target_capacity: float | None = None


_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclasses.dataclass(frozen=True)
class LoggingConfig:
    """Ray Serve's logging options for a deployment or an application."""

    encoding: str = "TEXT"
    log_level: str | int = "INFO"
    logs_dir: str | None = None
    # None: Capstan's default, off (the proxy logs every HTTP request; see
    # capstan.v1.LoggingConfig). Ray Serve's default is True.
    enable_access_log: bool | None = None
    additional_log_standard_attrs: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        if self.encoding not in ("TEXT", "JSON"):
            raise InvalidSpec(
                f'logging_config.encoding must be "TEXT" or "JSON", not {self.encoding!r}'
            )
        level = self.log_level
        if isinstance(level, int):
            level = logging.getLevelName(level)
        if level not in _LEVELS:
            raise InvalidSpec(
                f"logging_config.log_level must be one of {', '.join(_LEVELS)}, not {level!r}"
            )
        object.__setattr__(self, "log_level", level)

    @classmethod
    def of(cls, value: Any) -> LoggingConfig:
        """A LoggingConfig from itself or a dict of its fields."""
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise InvalidSpec("logging_config must be a LoggingConfig or a dict")
        unknown = set(value) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise InvalidSpec(f"logging_config has unknown fields: {', '.join(sorted(unknown))}")
        return cls(**value)

    def dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_proto(self) -> deployment_pb2.LoggingConfig:
        """capstan.v1.LoggingConfig: the same fields, by the same names."""
        return deployment_pb2.LoggingConfig(
            encoding=self.encoding,
            log_level=str(self.log_level),
            enable_access_log=self.enable_access_log,  # None leaves it unset
            logs_dir=self.logs_dir or "",
            additional_log_standard_attrs=list(self.additional_log_standard_attrs),
        )


_APP_STATUS = {
    cp.APPLICATION_STATE_DEPLOYING: ApplicationStatus.DEPLOYING,
    cp.APPLICATION_STATE_RUNNING: ApplicationStatus.RUNNING,
    cp.APPLICATION_STATE_UNHEALTHY: ApplicationStatus.UNHEALTHY,
    cp.APPLICATION_STATE_DEPLOY_FAILED: ApplicationStatus.DEPLOY_FAILED,
    cp.APPLICATION_STATE_DELETING: ApplicationStatus.DELETING,
}
_DEPLOYMENT_STATUS = {
    cp.DEPLOYMENT_STATE_UPDATING: DeploymentStatus.UPDATING,
    cp.DEPLOYMENT_STATE_HEALTHY: DeploymentStatus.HEALTHY,
    cp.DEPLOYMENT_STATE_UNHEALTHY: DeploymentStatus.UNHEALTHY,
    cp.DEPLOYMENT_STATE_DEPLOY_FAILED: DeploymentStatus.DEPLOY_FAILED,
    cp.DEPLOYMENT_STATE_DELETING: DeploymentStatus.UPDATING,
}
_REPLICA_STATE = {
    cp.REPLICA_STATE_PENDING: ReplicaState.PENDING_ALLOCATION,
    cp.REPLICA_STATE_STARTING: ReplicaState.STARTING,
    cp.REPLICA_STATE_RUNNING: ReplicaState.RUNNING,
    cp.REPLICA_STATE_DRAINING: ReplicaState.STOPPING,
    cp.REPLICA_STATE_STOPPING: ReplicaState.STOPPING,
}


def serve_status(applications: list[cp.Application]) -> ServeStatus:
    """The ServeStatus for the control plane's applications."""
    return ServeStatus(applications={app.name: _application(app) for app in applications})


def _application(app: cp.Application) -> ApplicationStatusOverview:
    return ApplicationStatusOverview(
        status=_APP_STATUS.get(app.state, ApplicationStatus.NOT_STARTED),
        message=app.message,
        deployments={d.spec.name: _deployment(d) for d in app.deployments},
        route_prefix=app.route_prefix or None,
    )


def _deployment(deployment: cp.Deployment) -> DeploymentStatusOverview:
    counts: dict[str, int] = {}
    for replica in deployment.replicas:
        state = _REPLICA_STATE.get(replica.state, ReplicaState.STARTING).value
        counts[state] = counts.get(state, 0) + 1
    return DeploymentStatusOverview(
        status=_DEPLOYMENT_STATUS.get(deployment.state, DeploymentStatus.UPDATING),
        replica_states=counts,
        message=deployment.message,
    )
