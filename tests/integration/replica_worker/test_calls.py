"""The replica worker, driven as callers drive it (real worker processes, real
gRPC on 127.0.0.1, user code from tests/apps): calls to classes and functions,
sync and async, results and errors, and HTTP requests."""

from __future__ import annotations

import asyncio
import json
import pickle
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from capstan.internal.v1 import replica_pb2
from executors.base import ReplicaRef
from tests.contract.exchange_client import CallFailed, ExchangeClient, invocation, result_of
from tests.integration.replica_worker.conftest import Launch
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(60)

Code = grpc.StatusCode


@pytest.fixture(scope="module")
async def echo(launch: Launch) -> ReplicaRef:
    return await launch("tests.apps.echo:Echo", init_args=["> "], init_kwargs={"suffix": "!"})


@pytest.fixture
async def client(echo: ReplicaRef) -> AsyncIterator[ExchangeClient]:
    async with ExchangeClient(echo.address) as client:
        yield client


async def _stats(client: ExchangeClient) -> replica_pb2.GetStatsResponse:
    return await client.stub.GetStats(replica_pb2.GetStatsRequest())


# Calls: classes and functions, sync and async, results and errors.


async def test_class_with_init_arguments_answers_sync_and_async_methods(
    client: ExchangeClient,
) -> None:
    assert await client.call("hello", "ann") == "> hello ann!"
    assert await client.call("ahello", name="bob") == "> ahello bob!"


async def test_sync_methods_run_off_the_event_loop(client: ExchangeClient) -> None:
    thread = await client.call("block", 0)
    assert thread.startswith("capstan-user")


async def test_function_deployment(launch: Launch) -> None:
    ref = await launch("tests.apps.echo:shout")
    async with ExchangeClient(ref) as client:
        assert await client.call("", "hi") == "HI"
        with pytest.raises(CallFailed, match="is a function") as failure:
            await client.call("other")
    assert failure.value.code == Code.NOT_FOUND


async def test_generators_stream_one_message_per_item(client: ExchangeClient) -> None:
    messages = await client.invoke("count", 3)
    assert [m.result.data for m in messages[:-1]] == [b"0", b"1", b"2"]
    assert not any(m.done for m in messages[:-1])
    assert messages[-1].done and messages[-1].WhichOneof("kind") is None
    assert await client.call("acount", 2) == [{"i": 0}, {"i": 1}]


async def test_pickle_encoding_both_ways(client: ExchangeClient) -> None:
    messages = await client.invoke("hello", "pickles", pickled=True)
    assert pickle.loads(messages[-1].result.data) == "> hello pickles!"


async def test_user_exception_is_an_error_with_its_traceback(client: ExchangeClient) -> None:
    with pytest.raises(CallFailed) as failure:
        await client.call("fail")
    error = failure.value.error
    assert failure.value.code == Code.UNKNOWN
    assert (error.message, error.exception_type) == ("ValueError: boom", "ValueError")
    assert 'raise ValueError("boom")' in error.traceback
    assert "executors/replica" not in error.traceback


@pytest.mark.parametrize("method", ["nope", "_private", "__init__"])
async def test_unknown_method_is_not_found_and_lists_the_real_ones(
    client: ExchangeClient, method: str
) -> None:
    with pytest.raises(CallFailed) as failure:
        await client.call(method)
    assert failure.value.code == Code.NOT_FOUND
    assert repr(method) in failure.value.error.message
    assert "hello" in failure.value.error.message


async def test_result_that_json_cannot_carry_is_internal(client: ExchangeClient) -> None:
    with pytest.raises(
        CallFailed, match=r"result of Echo\.unserialisable is not JSON-serialisable"
    ):
        await client.call("unserialisable")


async def test_json_arguments_that_miss_the_signature_are_invalid(
    client: ExchangeClient,
) -> None:
    with pytest.raises(CallFailed) as failure:
        await client.call("hello", "ann", shout=True)
    assert failure.value.code == Code.INVALID_ARGUMENT
    assert failure.value.error.message == (
        "arguments do not fit Echo.hello(name: str) -> str: "
        "got an unexpected keyword argument 'shout'"
    )
    # A Python handle's pickled arguments are not checked: its TypeError is the user's.
    with pytest.raises(CallFailed) as failure:
        await client.call("hello", pickled=True)
    assert failure.value.code == Code.UNKNOWN
    assert failure.value.error.exception_type == "TypeError"


@pytest.mark.parametrize(
    ("args", "kwargs", "field"),
    [
        (b"[1,", b"", "arguments.args"),
        (b"", b"[1]", "arguments.kwargs"),
        (b"{}", b"", "arguments.args"),
    ],
)
async def test_malformed_arguments_are_invalid(
    client: ExchangeClient, args: bytes, kwargs: bytes, field: str
) -> None:
    request = invocation("hello")
    request.arguments.args, request.arguments.kwargs = args, kwargs
    with pytest.raises(CallFailed, match=field) as failure:
        result_of(await client.responses(await client.send(invocation=request)))
    assert failure.value.code == Code.INVALID_ARGUMENT


async def test_many_requests_share_one_stream_concurrently(client: ExchangeClient) -> None:
    started = time.monotonic()
    ids = [await client.start("sleep", 0.3) for _ in range(40)]
    ids += [await client.start("block", 0.3) for _ in range(8)]
    results = await asyncio.gather(*(client.responses(i) for i in ids))
    assert time.monotonic() - started < 3.0  # one at a time would take 14.4 s
    assert all(r[-1].done and r[-1].HasField("result") for r in results)
    assert max(m.ongoing_requests for r in results for m in r) > 1


async def test_cancel_answers_cancelled_and_frees_the_slot(client: ExchangeClient) -> None:
    request_id = await client.start("sleep", 30)
    await eventually(client.ongoing_requests, "the request to be in flight")
    await client.cancel(request_id)
    [message] = await client.responses(request_id)
    assert message.done and message.error.code == Code.CANCELLED.value[0]
    assert message.ongoing_requests == 0


async def test_stats_and_health(echo: ReplicaRef, client: ExchangeClient) -> None:
    stats = await _stats(client)
    assert (stats.replica_id, stats.nonce, stats.version) == (echo.replica_id, echo.nonce, "v1")
    assert stats.deployment == "echo" and stats.pid == int(echo.data["pid"])
    assert stats.total_requests >= 1 and not stats.draining
    await client.stub.CheckHealth(replica_pb2.CheckHealthRequest(), timeout=5)
    health = health_pb2_grpc.HealthStub(client.channel)
    for service in ("", "capstan.internal.v1.ReplicaService"):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_environment_for_user_code(launch: Launch) -> None:
    ref = await launch("tests.apps.echo:Echo", env_vars={"GREETING": "hi"})
    async with ExchangeClient(ref) as client:
        assert await client.call("environment", "GREETING") == "hi"
        assert await client.call("environment", "CAPSTAN_REPLICA_ID") == ref.replica_id
        assert await client.call("environment", "OMP_NUM_THREADS") == "1"


# HTTP.


async def test_http_request_reaches_call_intact(client: ExchangeClient) -> None:
    answer = await client.http(
        "PUT",
        "/echo/a/b",
        root_path="/echo",
        query_string=b"x=1&y=two",
        headers=[replica_pb2.Header(name=b"x-trace", value=b"abc")],
        body=b"payload",
        client_host="10.0.0.7",
        client_port=5555,
    )
    assert answer.status == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {
        "method": "PUT",
        "path": "/echo/a/b",
        "root_path": "/echo",
        "query": {"x": "1", "y": "two"},
        "headers": {"x-trace": "abc"},
        "body": "payload",
        "client": ["10.0.0.7", 5555],
    }


@pytest.fixture(scope="module")
async def responses(launch: Launch) -> ReplicaRef:
    return await launch("tests.apps.responses:Responses")


@pytest.mark.parametrize(
    ("kind", "status", "content_type", "body"),
    [
        ("text", 200, "text/plain; charset=utf-8", b"hello"),
        ("bytes", 200, "application/octet-stream", b"\x00\x01"),
        ("json", 200, "application/json", b'{"a":[1,2],"b":null}'),
        ("response", 201, "text/plain; charset=utf-8", b"created"),
        ("fail", 500, "text/plain; charset=utf-8", b"Internal Server Error"),
        ("unrenderable", 500, "text/plain; charset=utf-8", b"Internal Server Error"),
    ],
)
async def test_http_results_become_one_response(
    responses: ReplicaRef, kind: str, status: int, content_type: str, body: bytes
) -> None:
    async with ExchangeClient(responses.address) as client:
        answer = await client.http("GET", f"/r/{kind}", root_path="/r")
    assert len(answer.messages) == 1 and answer.messages[0].done
    assert (answer.status, answer.headers["content-type"], answer.body) == (
        status,
        content_type,
        body,
    )
    if kind == "response":
        assert answer.headers["x-custom"] == "yes"


@pytest.mark.parametrize(
    ("kind", "body"), [("streaming", b"chunk0;chunk1;chunk2;"), ("generator", b"ab")]
)
async def test_http_streams_arrive_in_pieces(responses: ReplicaRef, kind: str, body: bytes) -> None:
    async with ExchangeClient(responses.address) as client:
        answer = await client.http("GET", f"/r/{kind}", root_path="/r")
    assert answer.status == 200 and answer.body == body
    assert len(answer.messages) > 2
    assert [m.done for m in answer.messages] == [False] * (len(answer.messages) - 1) + [True]
    assert not any(m.http.status for m in answer.messages[1:])


async def test_function_answers_http(launch: Launch) -> None:
    ref = await launch("tests.apps.echo:http_function")
    async with ExchangeClient(ref) as client:
        answer = await client.http("DELETE", "/f/x", root_path="/f")
    assert answer.body == b"DELETE /f/x"


async def test_fastapi_class_ingress_binds_self_and_runs_lifespan(launch: Launch) -> None:
    ref = await launch("tests.apps.ingress:Greeter", init_args=["Howdy"])
    async with ExchangeClient(ref) as client:
        hi = await client.http("GET", "/api/hi/ann", root_path="/api", query_string=b"loud=true")
        item = await client.http(
            "POST",
            "/api/items",
            root_path="/api",
            headers=[replica_pb2.Header(name=b"content-type", value=b"application/json")],
            body=json.dumps({"name": "pen", "count": 2}).encode(),
        )
        state = await client.http("GET", "/api/state", root_path="/api")
        missing = await client.http("GET", "/api/nowhere", root_path="/api")
    assert (hi.status, hi.json()) == (200, {"text": "HOWDY ANN"})
    assert item.json() == {"greeting": "Howdy", "name": "pen", "count": 2}
    assert state.json() == {"started": True}
    assert missing.status == 404
