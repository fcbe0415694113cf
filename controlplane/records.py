"""What the store holds: a deployment with its desired spec and status, and a
replica with where it runs. Frozen; a change is a new record."""

from __future__ import annotations

import dataclasses
import enum

from capstan.v1 import controlplane_pb2
from controlplane.scheduler import Placement
from controlplane.spec import DeploymentSpec
from executors.base import ReplicaRef


class DeploymentState(enum.IntEnum):
    """Mirrors capstan.v1.DeploymentState."""

    UPDATING = controlplane_pb2.DEPLOYMENT_STATE_UPDATING
    HEALTHY = controlplane_pb2.DEPLOYMENT_STATE_HEALTHY
    UNHEALTHY = controlplane_pb2.DEPLOYMENT_STATE_UNHEALTHY
    DEPLOY_FAILED = controlplane_pb2.DEPLOYMENT_STATE_DEPLOY_FAILED
    DELETING = controlplane_pb2.DEPLOYMENT_STATE_DELETING


class ReplicaState(enum.IntEnum):
    """Mirrors capstan.v1.ReplicaState."""

    PENDING = controlplane_pb2.REPLICA_STATE_PENDING
    STARTING = controlplane_pb2.REPLICA_STATE_STARTING
    RUNNING = controlplane_pb2.REPLICA_STATE_RUNNING
    DRAINING = controlplane_pb2.REPLICA_STATE_DRAINING
    STOPPING = controlplane_pb2.REPLICA_STATE_STOPPING


@dataclasses.dataclass(frozen=True)
class DeploymentRecord:
    """A deployment as stored.

    `spec`/`version` are what the reconciler drives towards. `stable_spec`/
    `stable_version` are the last ones that finished rolling out: a failed
    rollout falls back to them. `generation` counts applies, so a waiter can
    tell its own apply's outcome from a later one's. `is_halted` means the
    spec in force failed and there was nothing to fall back on: start nothing.
    """

    name: str
    spec: DeploymentSpec
    version: str
    generation: int
    state: DeploymentState = DeploymentState.UPDATING
    message: str = ""
    stable_spec: DeploymentSpec | None = None
    stable_version: str | None = None
    is_halted: bool = False
    is_deleting: bool = False
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def code_hash(self) -> str:
        return self.spec.code_hash()

    @property
    def is_stable(self) -> bool:
        """The spec in force is the one that last rolled out (prev_version,
        a precondition of the apply, does not count)."""
        if self.stable_spec is None or self.stable_version != self.version:
            return False
        # Field by field: rebuilding a spec (dataclasses.replace) would
        # validate it again, user_config included, on every pass.
        return all(
            getattr(self.spec, f.name) == getattr(self.stable_spec, f.name)
            for f in dataclasses.fields(self.spec)
            if f.name != "prev_version"
        )


@dataclasses.dataclass(frozen=True)
class ReplicaRecord:
    """A replica the control plane started (or is about to).

    `user_config` and `max_concurrent_queries` are what the replica runs
    with now, so the reconciler can tell when it needs a Reconfigure.
    """

    id: str
    deployment: str
    version: str
    code_hash: str
    state: ReplicaState
    executor: str
    user_config: str | None = None
    max_concurrent_queries: int = 100
    ref: ReplicaRef | None = None
    placement: Placement | None = None
    message: str = ""
    started_at: float = 0.0

    @property
    def address(self) -> str:
        return self.ref.address if self.ref else ""

    @property
    def is_tls(self) -> bool:
        """Whether the replica serves TLS (it listens off loopback)."""
        return bool(self.ref and self.ref.tls)

    @property
    def node(self) -> str:
        if self.ref and self.ref.node:
            return self.ref.node
        return self.placement.node if self.placement else ""


@dataclasses.dataclass(frozen=True)
class Event:
    """One line of the append-only event log."""

    ts: float
    deployment: str
    replica: str
    kind: str
    message: str
    # The row's id: increases with every event, so a watch resumes after it.
    id: int = 0


@dataclasses.dataclass(frozen=True)
class VersionRecord:
    """One apply, as recorded in the history."""

    name: str
    version: str
    generation: int
    spec: DeploymentSpec
    applied_at: float
