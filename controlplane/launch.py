"""The LaunchSpec an executor gets for one replica: its config (who it is,
what it runs, where to listen, whom to call back) and its placement's env."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence

from capstan.v1 import replica_pb2
from controlplane.records import ReplicaRecord
from controlplane.scheduler import Placement, placement_env
from controlplane.settings import Settings
from controlplane.spec import DeploymentSpec
from executors.base import LaunchSpec, Node

# Capacity per executor this pass: nodes, or why they could not be read.
Capacity = Mapping[str, Sequence[Node] | str]


def launch_spec(
    settings: Settings,
    control_plane_address: str,
    record: ReplicaRecord,
    spec: DeploymentSpec,
    placement: Placement,
    capacity: Capacity,
) -> LaunchSpec:
    """What `executor.prepare`/`launch` get for the replica `record`."""
    return LaunchSpec(
        config=_replica_config(settings, control_plane_address, record, spec),
        node=placement.node,
        env=placement_env(placement, spec.replica, _node(capacity, spec, placement)),
    )


def _replica_config(
    settings: Settings, control_plane_address: str, record: ReplicaRecord, spec: DeploymentSpec
) -> replica_pb2.ReplicaConfig:
    return replica_pb2.ReplicaConfig(
        replica_id=record.id,
        nonce=secrets.token_hex(8),
        version=record.version,
        deployment=spec.to_proto(),
        host=settings.replica_host,
        control_plane_address=control_plane_address,
    )


def _node(capacity: Capacity, spec: DeploymentSpec, placement: Placement) -> Node | None:
    nodes = capacity.get(spec.executor)
    if nodes is None or isinstance(nodes, str):
        return None
    return next((node for node in nodes if node.name == placement.node), None)
