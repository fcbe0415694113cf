"""The issue's validation holes, as a table: each value the control plane
once accepted (or answered INTERNAL for) is now InvalidSpec naming the field."""

from __future__ import annotations

import json
import math

import pytest
from google.protobuf import struct_pb2

from capstan.errors import InvalidSpec
from capstan.internal.v1 import replica_pb2
from capstan.json_values import to_value
from capstan.v1 import deployment_pb2
from controlplane.limits import MAX_JSON_DEPTH, parse_json
from controlplane.parsed_specs import ParsedSpecs
from controlplane.spec import DeploymentSpec


def proto(**fields: object) -> deployment_pb2.DeploymentSpec:
    msg = deployment_pb2.DeploymentSpec(name="hello")
    msg.code.import_path = "app:Hello"
    for key, value in fields.items():
        if key in ("num_cpus", "num_gpus"):
            setattr(msg.replica_options, key, value)
        elif key == "resources":
            msg.replica_options.resources.update(value)  # type: ignore[arg-type]
        elif key == "autoscaling":
            msg.autoscaling_config.CopyFrom(deployment_pb2.AutoscalingConfig(**value))  # type: ignore[arg-type]
        elif key == "sdk_object":
            msg.code.sdk_object.Pack(replica_pb2.PythonObject(cloudpickle=value))  # type: ignore[arg-type]
        elif key == "user_config" and isinstance(value, struct_pb2.ListValue):
            msg.user_config.list_value.CopyFrom(value)
        elif key == "user_config":
            msg.user_config.CopyFrom(to_value(json.loads(value), "user_config"))  # type: ignore[arg-type]
        elif key == "log_level":
            msg.logging_config.log_level = value  # type: ignore[assignment]
        else:
            setattr(msg, key, value)
    return msg


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def deep_list(depth: int) -> struct_pb2.ListValue:
    """Lists in lists, `depth` deep, built by hand: json_format refuses to."""
    outer = struct_pb2.ListValue()
    inner = outer
    for _ in range(depth - 1):
        inner = inner.values.add().list_value
        inner.SetInParent()  # an empty list, not an unset value
    return outer


REFUSED = [
    (
        "drain loop of 1e9 s",
        {"graceful_shutdown_wait_loop_s": 1e9},
        "graceful_shutdown_wait_loop_s",
    ),
    ("health period 1e308", {"health_check_period_s": 1e308}, "health_check_period_s"),
    (
        "shutdown timeout inf",
        {"graceful_shutdown_timeout_s": math.inf},
        "graceful_shutdown_timeout_s",
    ),
    ("health timeout nan", {"health_check_timeout_s": math.nan}, "health_check_timeout_s"),
    ("a day and a second", {"health_check_period_s": 86_401.0}, "<= 86400"),
    ("num_gpus inf", {"num_gpus": math.inf}, "replica_options.num_gpus"),
    ("num_cpus 1e6", {"num_cpus": 1e6}, "replica_options.num_cpus"),
    ("resource nan", {"resources": {"disk": math.nan}}, "replica_options.resources['disk']"),
    ("1e9 replicas", {"num_replicas": 10**9}, "num_replicas"),
    ("max_concurrent 2**31-1", {"max_concurrent_queries": 2**31 - 1}, "max_concurrent_queries"),
    ("queue 2**31-1", {"max_queued_requests": 2**31 - 1}, "max_queued_requests"),
    (
        "autoscale to 1e9",
        {"autoscaling": {"max_replicas": 10**9}},
        "autoscaling_config.max_replicas",
    ),
    ("upscale delay inf", {"autoscaling": {"upscale_delay_s": math.inf}}, "upscale_delay_s"),
    ("upscaling factor 1e9", {"autoscaling": {"upscaling_factor": 1e9}}, "upscaling_factor"),
    ("name starting with _", {"name": "_hidden"}, "name '_hidden'"),
    ("name starting with -", {"name": "-rf"}, "name '-rf'"),
    ("user_config of 1 MiB + 1", {"user_config": '"' + "x" * (1 << 20) + '"'}, "user_config is"),
    ("user_config nested 101", {"user_config": deep_list(MAX_JSON_DEPTH + 1)}, "nested deeper"),
    ("log level of none", {"log_level": "LOUD"}, "logging_config.log_level must be one of"),
    ("version of 257", {"version": "v" * 257}, "version is longer than 256"),
    ("spec over 4 MiB", {"sdk_object": b"x" * (4 << 20)}, "spec is"),
]


@pytest.mark.parametrize(("fields", "field"), [pytest.param(f, n, id=i) for i, f, n in REFUSED])
def test_out_of_range_values_are_refused_naming_the_field(fields: dict, field: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        DeploymentSpec.from_proto(proto(**fields))
    assert field in caught.value.message
    # The field path a BadRequest carries (proto names) begins the message.
    assert caught.value.field and caught.value.message.startswith(caught.value.field)


def test_nested_init_args_are_refused() -> None:
    msg = proto()
    msg.init_arguments.args.CopyFrom(deep_list(MAX_JSON_DEPTH + 1))
    with pytest.raises(InvalidSpec, match="init_arguments is nested deeper") as caught:
        DeploymentSpec.from_proto(msg)
    assert caught.value.field == "init_arguments"


def test_the_edges_of_the_ranges_are_accepted() -> None:
    spec = DeploymentSpec.from_proto(
        proto(
            graceful_shutdown_timeout_s=86_400.0,
            num_cpus=1024.0,
            user_config=json.dumps(nested(MAX_JSON_DEPTH - 1)),
            name="9lives",
        )
    )
    assert spec.graceful_shutdown_timeout_s == 86_400.0
    assert parse_json(nested(MAX_JSON_DEPTH), "x", 1 << 10) is not None


def test_the_cluster_maximum_is_checked_at_the_edge() -> None:
    spec = DeploymentSpec.from_proto(proto(num_replicas=1001))
    with pytest.raises(InvalidSpec, match=r"num_replicas is 1001; .* at most 1000"):
        spec.require_replicas_at_most(1000)
    spec.require_replicas_at_most(1001)


def test_stored_specs_are_parsed_once() -> None:
    data = proto(user_config=json.dumps({"a": 1})).SerializeToString()
    specs = ParsedSpecs()
    first = specs.load(data)
    assert specs.load(data) is first
    specs.sweep()
    assert specs.load(data) is first  # read since the last sweep: kept
    specs.sweep()
    specs.sweep()
    assert len(specs) == 0 and specs.load(data) is not first
