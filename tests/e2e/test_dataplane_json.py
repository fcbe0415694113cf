"""What a client in another language sees of a Python deployment: its
methods called through the DataPlane with arguments in proto JSON, its
constructor arguments read back as JSON, its errors as statuses a program
reads (one code, ErrorInfo metadata)."""

from __future__ import annotations

import fractions

import grpc
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from capstan.v1 import controlplane_pb2 as cp
from capstan.v1 import dataplane_pb2, dataplane_pb2_grpc
from tests.support.cluster import Cluster


def greeter_class() -> type:
    # Defined in a function, so cloudpickle ships it by value: the replica
    # need not import this test module.
    class Greeter:
        def __init__(self, greeting: str, *, times: int = 1) -> None:
            self.greeting = greeting
            self.times = times

        def greet(self, name: str, punct: str = "!") -> str:
            return f"{self.greeting}, {name}{punct}" * self.times

        def count(self, n: int):
            for i in range(n):
                yield {"i": i}

        def fail(self) -> None:
            raise TypeError("wrong type")

    return Greeter


@pytest.fixture
def dataplane(cluster: Cluster):
    with grpc.insecure_channel(cluster.grpc_address) as channel:
        yield dataplane_pb2_grpc.DataPlaneServiceStub(channel)


@pytest.fixture
def greeter(serve):
    deployment = serve.deployment(greeter_class()).options(
        init_args=("Hello",), init_kwargs={"times": 1}
    )
    deployment.deploy()
    yield deployment.name
    deployment.delete()


def test_a_call_with_proto_json_arguments(greeter: str, dataplane) -> None:
    request = json_format.ParseDict(
        {
            "deployment": greeter,
            "method_name": "greet",
            "arguments": {"args": ["Ada"], "kwargs": {"punct": "?"}},
        },
        dataplane_pb2.CallRequest(),
    )
    reply = dataplane.Call(request, timeout=30)
    assert json_format.MessageToDict(reply) == {"result": "Hello, Ada?"}


def test_a_streamed_call_yields_json_items(greeter: str, dataplane) -> None:
    request = json_format.ParseDict(
        {"deployment": greeter, "method_name": "count", "arguments": {"args": [3]}},
        dataplane_pb2.CallStreamRequest(),
    )
    items = [json_format.MessageToDict(r.item) for r in dataplane.CallStream(request, timeout=30)]
    assert items == [{"i": 0}, {"i": 1}, {"i": 2}]


def test_a_user_exception_is_unknown_with_its_type_and_deployment(greeter: str, dataplane) -> None:
    request = dataplane_pb2.CallRequest(deployment=greeter, method_name="fail")
    with pytest.raises(grpc.RpcError) as failure:
        dataplane.Call(request, timeout=30)
    assert failure.value.code() == grpc.StatusCode.UNKNOWN
    assert failure.value.details() == "TypeError: wrong type"
    info = error_details_pb2.ErrorInfo()
    assert rpc_status.from_call(failure.value).details[0].Unpack(info)
    assert (info.reason, info.domain) == ("USER_CODE_ERROR", "capstan.v1")
    assert dict(info.metadata) == {"exception_type": "TypeError", "deployment": greeter}


def test_json_init_arguments_read_back_from_get_deployment(greeter: str, cluster: Cluster) -> None:
    stored = cluster.client().get(greeter)
    spec = json_format.MessageToDict(stored.spec, preserving_proto_field_name=True)
    assert spec["init_arguments"] == {"args": ["Hello"], "kwargs": {"times": 1}}
    assert "sdk_init_arguments" not in spec


def test_init_arguments_json_cannot_carry_are_pickled(serve, cluster: Cluster) -> None:
    deployment = serve.deployment(greeter_class()).options(
        name="Exact", init_args=(fractions.Fraction(1, 3),)
    )
    deployment.deploy()
    try:
        stored: cp.Deployment = cluster.client().get("Exact")
        assert not stored.spec.HasField("init_arguments")
        assert stored.spec.sdk_init_arguments.type_url.endswith(
            "capstan.internal.v1.EncodedArguments"
        )
        assert deployment.get_handle().greet.remote("Ada").result() == "1/3, Ada!"
    finally:
        deployment.delete()


def test_arguments_that_miss_the_signature_are_invalid_argument(greeter: str, dataplane) -> None:
    request = dataplane_pb2.CallRequest(deployment=greeter, method_name="greet")
    with pytest.raises(grpc.RpcError) as failure:
        dataplane.Call(request, timeout=30)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "missing a required argument: 'name'" in failure.value.details()
