"""Applications (Ray Serve 2.x): a named set of deployments built with
`.bind()`, one of which, the ingress, answers HTTP at the application's route
prefix; the rest are reached through handles. Validated here, once, like a
deployment spec; the store keeps the application's record beside its
deployments, each stored under `DeploymentSpec.id` ("<app>.<name>")."""

from __future__ import annotations

import dataclasses
import enum
import json

from google.protobuf import struct_pb2

from capstan import json_values
from capstan.errors import InvalidSpec
from capstan.v1 import controlplane_pb2
from controlplane import limits
from controlplane.records import DeploymentState
from controlplane.spec import DeploymentSpec, check_name, check_route_prefix

# Ray Serve's default when serve.run is given no route_prefix.
DEFAULT_ROUTE_PREFIX = "/"


class ApplicationState(enum.IntEnum):
    """Mirrors capstan.v1.ApplicationState (and Ray's ApplicationStatus)."""

    DEPLOYING = controlplane_pb2.APPLICATION_STATE_DEPLOYING
    RUNNING = controlplane_pb2.APPLICATION_STATE_RUNNING
    UNHEALTHY = controlplane_pb2.APPLICATION_STATE_UNHEALTHY
    DEPLOY_FAILED = controlplane_pb2.APPLICATION_STATE_DEPLOY_FAILED
    DELETING = controlplane_pb2.APPLICATION_STATE_DELETING


@dataclasses.dataclass(frozen=True)
class ApplicationSpec:
    """An application as asked for: its deployments carry `application` and
    their routes (the ingress at `route_prefix`, the others off HTTP)."""

    name: str
    route_prefix: str | None
    ingress: str
    deployments: tuple[DeploymentSpec, ...]
    # The config-file section it was built from (JSON text), or "".
    source: str = ""

    def __post_init__(self) -> None:
        check_name(self.name, "application name")
        check_route_prefix(self.route_prefix)
        if not self.deployments:
            raise InvalidSpec(f'application "{self.name}" has no deployments')
        names = [d.name for d in self.deployments]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise InvalidSpec(
                f'application "{self.name}" has more than one deployment named '
                f"{', '.join(twice)}; deployment names must be unique within an application"
            )
        if self.ingress not in names:
            raise InvalidSpec(
                f'ingress "{self.ingress}" is not one of the deployments of application '
                f'"{self.name}" ({", ".join(names)})'
            )

    @property
    def deployment_ids(self) -> tuple[str, ...]:
        return tuple(d.id for d in self.deployments)

    @classmethod
    def from_proto(cls, msg: controlplane_pb2.ApplicationSpec) -> ApplicationSpec:
        limits.require_size(msg.ByteSize(), "application", limits.MAX_APPLICATION_BYTES)
        check_name(msg.name, "application name")
        route_prefix = (msg.route_prefix or None) if msg.HasField("route_prefix") else "/"
        ingress = msg.ingress or (msg.deployments[0].name if msg.deployments else "")
        deployments = []
        for index, wire in enumerate(msg.deployments):
            try:
                spec = DeploymentSpec.from_proto(wire)
            except InvalidSpec as error:
                where = f"deployments[{index}]"
                field = f"{where}.{error.field}" if error.field else ""
                raise InvalidSpec(f"{where} ({wire.name!r}): {error.message}", field) from None
            deployments.append(
                dataclasses.replace(
                    spec,
                    application=msg.name,
                    route_prefix=route_prefix if spec.name == ingress else None,
                )
            )
        source = _source_text(msg.source) if msg.HasField("source") else ""
        return cls(msg.name, route_prefix, ingress, tuple(deployments), source)


def source_struct(source: str) -> struct_pb2.Struct | None:
    """A stored application source (JSON text) as a Struct; None for ""."""
    return json_values.to_value(json.loads(source), "source").struct_value if source else None


def _source_text(source: struct_pb2.Struct) -> str:
    value = json_values.to_python(source, "source")
    limits.require_depth(value, "source")
    return json.dumps(value, sort_keys=True)


def application_state(
    states: list[tuple[DeploymentState, str]], *, is_deleting: bool = False
) -> tuple[ApplicationState, str]:
    """An application's state from its deployments' (state, message), worst
    first: a failed rollout, then an unhealthy deployment, then one still
    updating; RUNNING when every deployment is HEALTHY."""
    if is_deleting:
        return ApplicationState.DELETING, ""
    for wanted, result in (
        (DeploymentState.DEPLOY_FAILED, ApplicationState.DEPLOY_FAILED),
        (DeploymentState.UNHEALTHY, ApplicationState.UNHEALTHY),
        (DeploymentState.UPDATING, ApplicationState.DEPLOYING),
        (DeploymentState.DELETING, ApplicationState.DEPLOYING),
    ):
        messages = [message for state, message in states if state == wanted]
        if messages:
            return result, "; ".join(m for m in messages if m)
    return ApplicationState.RUNNING, ""


@dataclasses.dataclass(frozen=True)
class ApplicationRecord:
    """An application as stored: its deployments by id, ingress first among
    equals only in that it holds the route."""

    name: str
    route_prefix: str | None
    ingress: str
    deployments: tuple[str, ...]
    generation: int = 1
    source: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0
