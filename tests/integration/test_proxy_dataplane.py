"""The gRPC DataPlane end to end, through the real proxy to real (hand-written)
replica servers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

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


def call(method: str, args: object = None, deployment: str = "d") -> dataplane_pb2.CallRequest:
    args_json = json.dumps(args).encode() if args is not None else b""
    return dataplane_pb2.CallRequest(deployment=deployment, method=method, args_json=args_json)


async def test_call_passes_json_arguments_through(dataplane: DataPlane) -> None:
    response = await dataplane.stub.Call(call("echo", [1, "two", {"three": 3}]))
    assert json.loads(response.result_json) == [1, "two", {"three": 3}]
    empty = await dataplane.stub.Call(dataplane_pb2.CallRequest(deployment="d"))
    assert json.loads(empty.result_json) == []


async def test_call_stream_yields_each_item(dataplane: DataPlane) -> None:
    request = dataplane_pb2.CallStreamRequest(deployment="d", method="stream", args_json=b"[4]")
    items = [json.loads(r.item_json) async for r in dataplane.stub.CallStream(request)]
    assert items == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("request_", "code", "text"),
    [
        (call("echo", [1], deployment="nope"), grpc.StatusCode.NOT_FOUND, "'nope'"),
        (call("no_such_method"), grpc.StatusCode.NOT_FOUND, "no_such_method"),
        (
            dataplane_pb2.CallRequest(deployment="d", args_json=b"[1,"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "args_json is not valid JSON",
        ),
        (
            dataplane_pb2.CallRequest(deployment="d", args_json=b'{"a": 1}'),
            grpc.StatusCode.INVALID_ARGUMENT,
            "args_json must be a JSON array",
        ),
        (
            dataplane_pb2.CallRequest(deployment="d", kwargs_json=b"[1]"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "kwargs_json must be a JSON object",
        ),
        (call("fail"), grpc.StatusCode.UNKNOWN, "ValueError: boom"),
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
    request = dataplane_pb2.CallStreamRequest(deployment="nope", method="stream", args_json=b"[1]")
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
    assert json.loads((await busy).result_json) == "a"


async def test_health_and_reflection_are_served(dataplane: DataPlane) -> None:
    health = health_pb2_grpc.HealthStub(dataplane.channel)
    service = "capstan.v1.DataPlaneService"
    reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert {service, "grpc.health.v1.Health"} <= await reflected_services(dataplane.channel)
    assert {service, "grpc.health.v1.Health"} <= await reflected_services(dataplane.channel, "v1")
    assert {"Call", "CallStream"} <= await reflected_methods(dataplane.channel, service)
