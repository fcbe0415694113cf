"""Launch specs for the test apps in tests/apps."""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import Mapping
from typing import Any

from capstan.internal.v1 import replica_pb2
from capstan.json_values import arguments_of, to_value
from capstan.v1 import deployment_pb2
from controlplane.cluster_keys import ClusterKeys
from executors.base import LaunchSpec
from executors.options import ReplicaOptions

# The workers import tests.apps.*, wherever the test run started.
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
# The test cluster's secret and CA: every config carries them, and the test
# callers (tests.contract.exchange_client) reach replicas through LINKS.
KEYS = ClusterKeys.generate()
LINKS = KEYS.links


def replica_config(
    import_path: str,
    *,
    init_args: list[Any] | None = None,
    init_kwargs: dict[str, Any] | None = None,
    user_config: Any = None,
    env_vars: dict[str, str] | None = None,
    **spec_fields: Any,
) -> replica_pb2.ReplicaConfig:
    """A ReplicaConfig for `import_path`, with a fresh replica id and nonce."""
    name = import_path.rpartition(":")[2].lower()
    spec = deployment_pb2.DeploymentSpec(
        name=name,
        code=deployment_pb2.Code(import_path=import_path),
        init_arguments=arguments_of(init_args or [], init_kwargs or {}, "init_arguments"),
        **spec_fields,
    )
    if user_config is not None:
        spec.user_config.CopyFrom(to_value(user_config, "user_config"))
    spec.replica_options.runtime_env.env_vars.update(env_vars or {})
    return replica_pb2.ReplicaConfig(
        replica_id=f"{name}-{uuid.uuid4().hex[:10]}",
        nonce=uuid.uuid4().hex,
        version="v1",
        deployment=spec,
        host="127.0.0.1",
        cluster_secret=KEYS.secret,
    )


def launch_spec(import_path: str, **options: Any) -> LaunchSpec:
    config = replica_config(import_path, **options)
    return launch_spec_of(config, env={"PYTHONPATH": str(REPO_ROOT)})


def launch_spec_of(
    config: replica_pb2.ReplicaConfig, *, node: str = "", env: Mapping[str, str] | None = None
) -> LaunchSpec:
    """The LaunchSpec the control plane would make of `config` on a node
    without GPUs: its validated options, the test cluster's keys, and its
    environment (env_vars, then OMP_NUM_THREADS unless they set it), then
    `env`."""
    config.cluster_secret = KEYS.secret
    config.tls_ca_cert = KEYS.ca_cert
    options = ReplicaOptions.from_proto(config.deployment.replica_options)
    placed = {"OMP_NUM_THREADS": options.omp_num_threads, **options.env_vars}
    env = {**placed, **(env or {})}
    return LaunchSpec(config, options, node=node, env=env, issue_certificate=KEYS.issue)
