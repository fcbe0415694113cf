"""What the control plane hands an executor to start one replica: the
worker's config, the replica's validated options, where it was placed, and
its environment, built here once (runtime_env.env_vars, then what the
placement implies: OMP_NUM_THREADS, CUDA_VISIBLE_DEVICES)."""

from __future__ import annotations

import secrets

from capstan.v1 import replica_pb2
from controlplane.records import ReplicaRecord
from controlplane.scheduler import Placement, placement_env
from controlplane.spec import DeploymentSpec
from executors.base import LaunchSpec, Node


def launch_spec(
    record: ReplicaRecord,
    spec: DeploymentSpec,
    placement: Placement,
    node: Node | None,
    control_plane_address: str,
) -> LaunchSpec:
    """The launch spec of replica `record` of `spec`, placed on `node` (None
    for an executor that places replicas itself). The worker's interface
    (`config.host`) is left to the executor, which knows where it runs."""
    config = replica_pb2.ReplicaConfig(
        replica_id=record.id,
        nonce=secrets.token_hex(8),
        version=record.version,
        deployment=spec.to_proto(),
        control_plane_address=control_plane_address,
    )
    options = spec.replica
    env = {**options.env_vars, **placement_env(placement, options, node)}
    return LaunchSpec(config=config, options=options, node=placement.node, env=env)
