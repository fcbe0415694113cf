"""What the control plane hands an executor to start one replica: the
worker's config, the replica's validated options, where it was placed, and
its environment, built here once (runtime_env.env_vars, then what the
placement implies: OMP_NUM_THREADS, CUDA_VISIBLE_DEVICES)."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Mapping, Sequence

from capstan.internal.v1 import replica_pb2
from controlplane.cluster_keys import ClusterKeys
from controlplane.packages.store import PackageStore
from controlplane.records import ReplicaRecord
from controlplane.scheduler import Placement, placement_env
from controlplane.spec import DeploymentSpec
from executors.base import LaunchSpec, Node


@dataclasses.dataclass(frozen=True)
class Credentials:
    """What every replica is handed to be reached and to reach others: the
    cluster's keys, and the control API's token for its handles."""

    keys: ClusterKeys
    token: str = dataclasses.field(default="", repr=False)


# Capacity per executor this pass: nodes, or why they could not be read.
Capacity = Mapping[str, Sequence[Node] | str]


def launch_spec(
    record: ReplicaRecord,
    spec: DeploymentSpec,
    placement: Placement,
    capacity: Capacity,
    control_plane_address: str,
    credentials: Credentials,
    packages: PackageStore | None = None,
) -> LaunchSpec:
    """The launch spec of replica `record` of `spec`, placed by `placement`
    on one of `capacity`'s nodes (none for an executor that places replicas
    itself). The worker's interface (`config.host`) is left to the executor,
    which knows where it runs, and so is its TLS certificate, issued through
    `credentials.keys` for an executor whose replicas listen off loopback. An
    uploaded package that the working_dir names is looked up in `packages`."""
    config = replica_pb2.ReplicaConfig(
        replica_id=record.id,
        nonce=secrets.token_hex(8),
        version=record.version,
        deployment=spec.to_proto(),
        control_plane_address=control_plane_address,
        cluster_secret=credentials.keys.secret,
        token=credentials.token,
        tls_ca_cert=credentials.keys.ca_cert,
    )
    options = spec.replica
    node = _node(capacity, spec, placement)
    env = {**options.env_vars, **placement_env(placement, options, node)}
    sha256 = options.package_sha256
    package = packages.archive(sha256) if sha256 and packages is not None else None
    return LaunchSpec(
        config=config,
        options=options,
        node=placement.node,
        env=env,
        package=package,
        issue_certificate=credentials.keys.issue,
    )


def _node(capacity: Capacity, spec: DeploymentSpec, placement: Placement) -> Node | None:
    nodes = capacity.get(spec.executor)
    if nodes is None or isinstance(nodes, str):
        return None
    return next((node for node in nodes if node.name == placement.node), None)
