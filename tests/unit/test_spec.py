"""DeploymentSpec validation: every error names the field and says what is
wanted; defaults follow Ray Serve; the proto round-trip is lossless."""

from __future__ import annotations

import dataclasses

import pytest

from capstan.errors import InvalidSpec
from capstan.internal.v1 import replica_pb2
from capstan.json_values import arguments_of, to_value
from capstan.v1 import deployment_pb2
from capstan.v1.deployment_pb2 import LoggingConfig
from controlplane.spec import Autoscaling, DeploymentSpec, ReplicaOptions


def proto(**fields: object) -> deployment_pb2.DeploymentSpec:
    msg = deployment_pb2.DeploymentSpec(name="hello")
    msg.code.import_path = "app:Hello"
    for key, value in fields.items():
        if key == "import_path":
            msg.code.import_path = value  # type: ignore[assignment]
        elif key == "autoscaling":
            msg.autoscaling_config.CopyFrom(value)  # type: ignore[arg-type]
        elif key == "num_cpus":
            msg.replica_options.num_cpus = value  # type: ignore[assignment]
        elif key == "num_gpus":
            msg.replica_options.num_gpus = value  # type: ignore[assignment]
        elif key == "user_config":
            msg.user_config.CopyFrom(to_value(value, "user_config"))
        elif key == "logging_config":
            msg.logging_config.CopyFrom(value)  # type: ignore[arg-type]
        else:
            setattr(msg, key, value)
    return msg


INVALID = [
    ("empty name", {"name": ""}, "name ''"),
    ("name with a space", {"name": "my app"}, "name 'my app' must be 1-64"),
    ("name too long", {"name": "x" * 65}, "must be 1-64 letters"),
    ("route prefix without /", {"route_prefix": "api"}, 'route_prefix "api" must start with "/"'),
    ("route prefix ending in /", {"route_prefix": "/api/"}, 'must not end with "/" (use "/api")'),
    ("route prefix with //", {"route_prefix": "/a//b"}, "empty or invalid path segment"),
    ("negative replicas", {"num_replicas": -1}, "num_replicas must be >= 0 and <= 100000, got -1"),
    (
        "num_replicas and autoscaling",
        {"num_replicas": 2, "autoscaling": deployment_pb2.AutoscalingConfig(max_replicas=3)},
        "num_replicas and autoscaling_config cannot both be set",
    ),
    (
        "autoscaling min above max",
        {"autoscaling": deployment_pb2.AutoscalingConfig(min_replicas=4, max_replicas=2)},
        "autoscaling_config.min_replicas (4) must not exceed max_replicas (2)",
    ),
    ("log level", {"logging_config": LoggingConfig(log_level="LOUD")}, "logging_config.log_level"),
    ("encoding", {"logging_config": LoggingConfig(encoding="XML")}, "logging_config.encoding"),
    (
        "log attribute",
        {"logging_config": LoggingConfig(additional_log_standard_attrs=["nope"])},
        "logging_config.additional_log_standard_attrs names 'nope'",
    ),
    ("bad import path", {"import_path": "app.Hello"}, "code.import_path 'app.Hello' must look"),
    ("import path with spaces", {"import_path": "my app:X"}, "code.import_path"),
    ("no code", {"import_path": ""}, "code must give exactly one of import_path or sdk_object"),
    ("zero max_concurrent", {"max_concurrent_queries": 0}, "max_concurrent_queries must be >= 1"),
    ("negative cpus", {"num_cpus": -1.0}, "replica_options.num_cpus must be >= 0"),
    ("1.5 gpus", {"num_gpus": 1.5}, "num_gpus above 1 must be a whole number"),
    ("zero health period", {"health_check_period_s": 0.0}, "health_check_period_s must be > 0"),
    (
        "negative graceful timeout",
        {"graceful_shutdown_timeout_s": -1.0},
        "graceful_shutdown_timeout_s must be >= 0",
    ),
    ("zero request timeout", {"request_timeout_s": 0.0}, "request_timeout_s must be > 0"),
    (
        "request timeout over a day",
        {"request_timeout_s": 86_401.0},
        "request_timeout_s must be > 0 and at most 86400",
    ),
    ("infinite request timeout", {"request_timeout_s": float("inf")}, "request_timeout_s"),
]


@pytest.mark.parametrize(("fields", "message"), [pytest.param(f, m, id=n) for n, f, m in INVALID])
def test_invalid_specs_name_the_field(fields: dict, message: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        DeploymentSpec.from_proto(proto(**fields))
    assert message in caught.value.message
    # The field path a BadRequest carries is in proto names, as in the message.
    assert caught.value.field and caught.value.field in caught.value.message


def test_init_arguments_come_as_json_or_as_an_sdk_object_not_both() -> None:
    msg = proto()
    msg.init_arguments.CopyFrom(arguments_of(["Ada"], {"n": 1}, "init_arguments"))
    assert DeploymentSpec.from_proto(msg).init_arguments == msg.init_arguments
    msg.sdk_init_arguments.Pack(replica_pb2.EncodedArguments(encoding=replica_pb2.ENCODING_PICKLE))
    with pytest.raises(InvalidSpec, match="cannot both be set") as caught:
        DeploymentSpec.from_proto(msg)
    assert caught.value.field == "sdk_init_arguments"


def test_user_config_is_kept_as_sorted_json_text() -> None:
    spec = DeploymentSpec.from_proto(proto(user_config={"b": [1, 2.5], "a": None}))
    assert spec.user_config == '{"a":null,"b":[1,2.5]}'
    assert spec.to_proto().user_config == to_value({"a": None, "b": [1, 2.5]}, "user_config")


def test_defaults_follow_ray_serve() -> None:
    spec = DeploymentSpec.from_proto(proto())
    assert spec.num_replicas == 1
    assert spec.route_prefix == "/hello"
    assert spec.max_concurrent_queries == 100
    assert (spec.graceful_shutdown_wait_loop_s, spec.graceful_shutdown_timeout_s) == (2.0, 20.0)
    assert (spec.health_check_period_s, spec.health_check_timeout_s) == (10.0, 30.0)
    assert spec.replica == ReplicaOptions(num_cpus=1.0)
    assert spec.version is None and spec.user_config is None


def test_empty_route_prefix_means_not_on_http() -> None:
    assert DeploymentSpec.from_proto(proto(route_prefix="")).route_prefix is None


def test_autoscaling_start_size() -> None:
    scaling = deployment_pb2.AutoscalingConfig(min_replicas=2, max_replicas=5)
    spec = DeploymentSpec.from_proto(proto(autoscaling=scaling))
    assert spec.autoscaling == Autoscaling(min_replicas=2, max_replicas=5)
    assert spec.target_replicas == 2


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"version": "v1", "prev_version": "v0", "user_config": {"a": 1}, "route_prefix": ""},
        {"logging_config": LoggingConfig(encoding="JSON", enable_access_log=False)},
        {"autoscaling": deployment_pb2.AutoscalingConfig(min_replicas=0, max_replicas=3)},
        {"num_gpus": 0.5, "num_cpus": 0.25, "max_concurrent_queries": 7},
        {"request_timeout_s": 2.5},
    ],
)
def test_proto_round_trip(fields: dict) -> None:
    spec = DeploymentSpec.from_proto(proto(**fields))
    assert DeploymentSpec.from_proto(spec.to_proto()) == spec


def test_code_hash_tracks_what_needs_a_restart() -> None:
    spec = DeploymentSpec.from_proto(proto())
    same_code = dataclasses.replace(spec, num_replicas=5, user_config="1", version="v9")
    assert same_code.code_hash() == spec.code_hash()
    more_cpus = dataclasses.replace(spec, replica=ReplicaOptions(num_cpus=2))
    assert more_cpus.code_hash() != spec.code_hash()
    other_code = dataclasses.replace(spec, import_path="app:Other")
    assert other_code.code_hash() != spec.code_hash()


def test_an_sdk_object_no_replica_can_load_is_refused_at_the_edge() -> None:
    msg = proto(import_path="")
    msg.code.sdk_object.Pack(deployment_pb2.LoggingConfig())  # say, another SDK's object
    with pytest.raises(InvalidSpec) as caught:
        DeploymentSpec.from_proto(msg)
    assert "holds a 'type.googleapis.com/capstan.v1.LoggingConfig'" in caught.value.message
    assert caught.value.field == "code.sdk_object"
    msg.code.sdk_object.Pack(replica_pb2.PythonObject(cloudpickle=b"..."))
    assert DeploymentSpec.from_proto(msg).sdk_object == msg.code.sdk_object
    msg.sdk_init_arguments.Pack(replica_pb2.PythonObject())
    with pytest.raises(InvalidSpec) as caught:
        DeploymentSpec.from_proto(msg)
    assert caught.value.field == "sdk_init_arguments"
