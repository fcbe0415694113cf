"""The typed replica options executors receive, the launch spec the control
plane builds from them, and the capability check at apply time."""

from __future__ import annotations

import re

import pytest

from capstan.errors import InvalidSpec
from capstan.internal.v1 import replica_pb2
from capstan.v1 import deployment_pb2
from controlplane.cluster_keys import ClusterKeys
from controlplane.launch import Credentials, launch_spec
from controlplane.records import ReplicaRecord, ReplicaState
from controlplane.scheduler import Placement
from controlplane.spec import DeploymentSpec
from executors.base import Capabilities, LaunchSpec, Node, NotSupported
from executors.options import ReplicaOptions


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    return Credentials(ClusterKeys.load_or_create(tmp_path_factory.mktemp("state")), "t0ken")


def test_defaults_follow_ray_serve() -> None:
    options = ReplicaOptions.from_proto(deployment_pb2.ReplicaOptions())
    assert options == ReplicaOptions(num_cpus=1.0, num_gpus=0.0)
    assert options.omp_num_threads == "1"


def test_an_explicit_zero_cpus_is_kept() -> None:
    assert ReplicaOptions.from_proto(deployment_pb2.ReplicaOptions(num_cpus=0)).num_cpus == 0


def test_proto_round_trip() -> None:
    options = ReplicaOptions(
        num_cpus=2.5,
        num_gpus=0.5,
        resources={"ssd": 1.0},
        env_vars={"A": "1"},
        working_dir="/srv/app",
        pip=("idna==3.7",),
    )
    assert ReplicaOptions.from_proto(options.to_proto()) == options


@pytest.mark.parametrize(("cpus", "threads"), [(0.25, "1"), (1, "1"), (2.5, "2"), (16, "16")])
def test_omp_threads_are_the_whole_cpus_at_least_one(cpus: float, threads: str) -> None:
    assert ReplicaOptions(num_cpus=cpus).omp_num_threads == threads


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"num_cpus": -1}, "replica_options.num_cpus must be >= 0 and <= 1024, got -1"),
        ({"num_gpus": 1.5}, "num_gpus above 1 must be a whole number, got 1.5"),
        ({"resources": {"CPU": 2}}, "resources may not name CPU; use num_cpus and num_gpus"),
        ({"resources": {"ssd": -1}}, "replica_options.resources['ssd'] must be >= 0"),
        ({"env_vars": {"A=B": "1"}}, "invalid variable name 'A=B'"),
        ({"pip": ("",)}, "runtime_env.pip has an empty requirement"),
        ({"pip": ("idna",), "conda": "env"}, "runtime_env may set pip or conda, not both"),
    ],
)
def test_invalid_options_name_the_field(fields: dict, message: str) -> None:
    with pytest.raises(InvalidSpec, match=re.escape(message)):
        ReplicaOptions(**fields)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        (ReplicaOptions(working_dir="/srv"), "working_dir"),
        (ReplicaOptions(pip=("idna",)), "pip"),
        (ReplicaOptions(conda="ml"), "conda"),
    ],
)
def test_capabilities_refuse_what_the_executor_lacks(options: ReplicaOptions, field: str) -> None:
    with pytest.raises(NotSupported, match=rf"executor 'x' does not support runtime_env\.{field}"):
        Capabilities().require(options, "x")
    everything = Capabilities(supports_working_dir=True, supports_pip=True, supports_conda=True)
    everything.require(options, "x")


def test_plain_options_need_no_capability() -> None:
    Capabilities().require(ReplicaOptions(env_vars={"A": "1"}), "x")


def test_launch_spec_refuses_an_unsafe_replica_id() -> None:
    config = replica_pb2.ReplicaConfig(replica_id="../etc")
    with pytest.raises(ValueError, match=r"replica_id '\.\./etc' is not a safe file name"):
        LaunchSpec(config, ReplicaOptions())


def _record() -> ReplicaRecord:
    return ReplicaRecord("hello-1", "hello", "v1", "hash", ReplicaState.STARTING, "local")


def _spec(**options: object) -> DeploymentSpec:
    return DeploymentSpec(name="hello", import_path="app:Hello", replica=ReplicaOptions(**options))


GPU_NODE = Node("gpu0", num_cpus=8, gpu_ids=("0", "1"))


@pytest.mark.parametrize(
    ("options", "placement", "node", "env"),
    [
        pytest.param({}, Placement("local", 1), None, {"OMP_NUM_THREADS": "1"}, id="defaults"),
        pytest.param(
            {"num_cpus": 3, "env_vars": {"A": "1"}},
            Placement("local", 3),
            None,
            {"A": "1", "OMP_NUM_THREADS": "3"},
            id="env_vars and the CPU count",
        ),
        pytest.param(
            {"num_cpus": 3, "env_vars": {"OMP_NUM_THREADS": "8"}},
            Placement("local", 3),
            None,
            {"OMP_NUM_THREADS": "8"},
            id="the user's OMP_NUM_THREADS wins",
        ),
        pytest.param(
            {"num_gpus": 1, "env_vars": {"CUDA_VISIBLE_DEVICES": "0,1"}},
            Placement("gpu0", 1, gpus={"1": 1.0}),
            GPU_NODE,
            {"CUDA_VISIBLE_DEVICES": "1", "OMP_NUM_THREADS": "1"},
            id="the placement's GPUs win",
        ),
    ],
)
def test_launch_spec_builds_the_environment_once(
    options: dict, placement: Placement, node: Node | None, env: dict, credentials: Credentials
) -> None:
    spec = _spec(**options)
    capacity = {spec.executor: [node]} if node is not None else {}
    launch = launch_spec(_record(), spec, placement, capacity, "127.0.0.1:9", credentials)
    assert launch.env == env
    assert launch.options is spec.replica
    assert launch.node == placement.node
    # The executor, which knows where the worker runs, chooses its interface.
    assert launch.config.host == ""
    assert (launch.replica_id, launch.config.version) == ("hello-1", "v1")
    assert launch.config.control_plane_address == "127.0.0.1:9"
    assert launch.config.deployment == spec.to_proto()
    # The worker gets the cluster secret and the token in its config (never
    # its command line); a certificate only from an executor that asks.
    assert launch.config.cluster_secret == credentials.keys.secret
    assert launch.config.token == "t0ken"
    assert launch.config.tls_ca_cert == credentials.keys.ca_cert
    assert not launch.config.tls_cert
