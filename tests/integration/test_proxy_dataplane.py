"""The gRPC DataPlane end to end, through the real proxy to real (hand-written)
replica servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from capstan.json_values import arguments_of, to_python
from capstan.v1 import dataplane_pb2, dataplane_pb2_grpc
from tests.proxy_support.fake_control_plane import endpoint
from tests.proxy_support.fake_replica import FakeReplica
from tests.proxy_support.harness import fake_cluster, proxy, sync_routes
from tests.support.reflection import reflected_methods, reflected_services

pytestmark = pytest.mark.timeout(30)

# One request at a time and no waiting room.
NO_QUEUE = {"max_concurrent_queries": 1, "max_queued_requests": 0}


@dataclass
class DataPlane:
    stub: dataplane_pb2_grpc.DataPlaneServiceStub
    channel: grpc.aio.Channel
    replica: FakeReplica


@pytest.fixture
async def dataplane() -> AsyncIterator[DataPlane]:
    async with fake_cluster() as running, proxy(running, no_replica_timeout_s=0.2) as server:
        replica, address = await running.replica("a")
        revision = running.publish(
            endpoint("d", "/d", [("a", address)]),
            endpoint(
                "tight", "", [("a", address)], max_concurrent_queries=1, max_queued_requests=0
            ),
            endpoint("empty", "/empty", []),
        )
        await sync_routes(server, revision)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            yield DataPlane(dataplane_pb2_grpc.DataPlaneServiceStub(channel), channel, replica)


def call(method: str, args: list | None = None, deployment: str = "d") -> dataplane_pb2.CallRequest:
    request = {"deployment": deployment, "method_name": method}
    if args is not None:
        request["arguments"] = {"args": args}
    return json_format.ParseDict(request, dataplane_pb2.CallRequest())


async def test_call_passes_json_arguments_through(dataplane: DataPlane) -> None:
    response = await dataplane.stub.Call(call("echo", [1, "two", {"three": 3}]))
    assert to_python(response.result) == [1, "two", {"three": 3}]
    empty = await dataplane.stub.Call(dataplane_pb2.CallRequest(deployment="d"))
    assert to_python(empty.result) == []


async def test_a_proto_json_request_reaches_the_replica_as_json(dataplane: DataPlane) -> None:
    request = json_format.ParseDict(
        {
            "deployment": "d",
            "method_name": "greet",
            "arguments": {"args": ["Ada"], "kwargs": {"punct": "?"}},
            "multiplexed_model_id": "m7",
        },
        dataplane_pb2.CallRequest(),
    )
    response = await dataplane.stub.Call(request)
    assert json_format.MessageToDict(response) == {"result": "Hello, Ada? (model m7)"}


async def test_call_stream_yields_each_item(dataplane: DataPlane) -> None:
    request = dataplane_pb2.CallStreamRequest(
        deployment="d", method_name="stream", arguments=arguments_of([4], {}, "arguments")
    )
    items = [to_python(r.item) async for r in dataplane.stub.CallStream(request)]
    assert items == [0, 1, 2, 3]


async def test_a_user_exception_is_unknown_with_its_type_and_deployment(
    dataplane: DataPlane,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await dataplane.stub.Call(call("fail"))
    assert failure.value.code() == grpc.StatusCode.UNKNOWN
    assert failure.value.details() == "ValueError: boom: secret-detail"
    status = rpc_status.from_call(failure.value)
    info = error_details_pb2.ErrorInfo()
    assert status is not None and status.details[0].Unpack(info)
    assert (info.reason, info.domain) == ("USER_CODE_ERROR", "capstan.v1")
    assert dict(info.metadata) == {"exception_type": "ValueError", "deployment": "d"}


@pytest.mark.parametrize(
    ("request_", "code", "text"),
    [
        (call("echo", [1], deployment="nope"), grpc.StatusCode.NOT_FOUND, "'nope'"),
        (call("no_such_method"), grpc.StatusCode.NOT_FOUND, "no_such_method"),
        (call("fail"), grpc.StatusCode.UNKNOWN, "ValueError: boom"),
        # A result JSON cannot carry: the server's fault, named, not a crash.
        (call("nan"), grpc.StatusCode.INTERNAL, "returned a float that JSON cannot carry"),
        (call("echo", deployment="empty"), grpc.StatusCode.UNAVAILABLE, "no live replica"),
    ],
)
async def test_call_errors_map_to_status_codes(
    dataplane: DataPlane, request_: dataplane_pb2.CallRequest, code: grpc.StatusCode, text: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await dataplane.stub.Call(request_)
    assert failure.value.code() == code
    assert text in failure.value.details()
    assert "Traceback" not in failure.value.details()


async def test_call_stream_errors_map_to_status_codes(dataplane: DataPlane) -> None:
    request = dataplane_pb2.CallStreamRequest(deployment="nope", method_name="stream")
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        async for _ in dataplane.stub.CallStream(request):
            pass
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND


async def test_full_deployment_is_resource_exhausted(dataplane: DataPlane) -> None:
    busy = dataplane.stub.Call(call("sleep", [0.5], deployment="tight"))
    await dataplane.replica.wait_for(lambda: dataplane.replica.ongoing == 1)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await dataplane.stub.Call(call("echo", [1], deployment="tight"))
    assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "at capacity" in failure.value.details()
    assert to_python((await busy).result) == "a"


async def test_health_and_reflection_are_served(dataplane: DataPlane) -> None:
    health = health_pb2_grpc.HealthStub(dataplane.channel)
    service = "capstan.v1.DataPlaneService"
    reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert {service, "grpc.health.v1.Health"} <= await reflected_services(dataplane.channel)
    assert {service, "grpc.health.v1.Health"} <= await reflected_services(dataplane.channel, "v1")
    assert {"Call", "CallStream"} <= await reflected_methods(dataplane.channel, service)
