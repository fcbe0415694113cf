"""A test caller of one replica: one Exchange stream, many requests on it,
plus the replica's unary RPCs. Real gRPC, no fakes."""

from __future__ import annotations

import asyncio
import itertools
import json
import pickle
from typing import Any

import grpc

from capstan.internal.v1 import replica_pb2, replica_pb2_grpc
from executors.base import ReplicaRef
from tests.contract.specs import LINKS

RESPONSE_TIMEOUT_S = 30.0


class CallFailed(Exception):
    """The replica answered a request with an Error."""

    def __init__(self, error: replica_pb2.Error) -> None:
        super().__init__(f"{grpc.StatusCode(_status(error.code)).name}: {error.message}")
        self.error = error
        self.code = _status(error.code)


def _status(number: int) -> grpc.StatusCode:
    return next(code for code in grpc.StatusCode if code.value[0] == number)


class Reply:
    """A response frame with the replica's in-flight count from the message
    that carried it; reads like the frame itself."""

    def __init__(self, frame: replica_pb2.ResponseFrame, ongoing_requests: int) -> None:
        self.frame = frame
        self.ongoing_requests = ongoing_requests

    def __getattr__(self, name: str) -> Any:
        return getattr(self.frame, name)


class _WithSecret(grpc.aio.UnaryUnaryClientInterceptor):
    """Adds the test cluster's secret to every unary call, as Capstan's
    callers do (the Exchange stream is opened with it explicitly)."""

    async def intercept_unary_unary(self, continuation, details, request):
        return await continuation(_signed(details), request)


def _signed(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*(details.metadata or ()), *LINKS.metadata)
    return details._replace(metadata=metadata)


def channel_to(replica: str | ReplicaRef) -> grpc.aio.Channel:
    """A channel to a replica at an address (plaintext) or of a ref (TLS
    when it serves TLS) that sends the test cluster's secret with each call."""
    address, tls = (
        (replica.address, replica.tls) if isinstance(replica, ReplicaRef) else (replica, False)
    )
    interceptors = [_WithSecret()]
    if not tls:
        return grpc.aio.insecure_channel(address, interceptors=interceptors)
    credentials = grpc.ssl_channel_credentials(root_certificates=LINKS.ca_cert)
    return grpc.aio.secure_channel(address, credentials, interceptors=interceptors)


class ExchangeClient:
    """`async with ExchangeClient(address_or_ref) as client:` opens the
    stream, with the test cluster's secret."""

    def __init__(self, replica: str | ReplicaRef) -> None:
        self.channel = channel_to(replica)
        self.stub = replica_pb2_grpc.ReplicaServiceStub(self.channel)
        self._ids = itertools.count(1)
        self._queues: dict[int, asyncio.Queue[Reply]] = {}
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None
        # Set when the stream ends; `error` says why, unless we ended it.
        self.ended = asyncio.Event()
        self.error: grpc.aio.AioRpcError | None = None

    async def __aenter__(self) -> ExchangeClient:
        self._call = self.stub.Exchange(metadata=LINKS.metadata)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self._call.cancel()
        await asyncio.wait([self._reader])
        await self.channel.close()

    async def _read(self) -> None:
        try:
            async for message in self._call:
                for frame in message.frames:
                    self._queues[frame.id].put_nowait(Reply(frame, message.ongoing_requests))
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                self.error = error
        finally:
            self.ended.set()

    async def send(self, **kind: Any) -> int:
        """Sends one request (`invocation=...` or `http=...`); returns its id."""
        request_id = next(self._ids)
        self._queues[request_id] = asyncio.Queue()
        frame = replica_pb2.RequestFrame(id=request_id, **kind)
        await self._call.write(replica_pb2.ExchangeRequest(frames=[frame]))
        return request_id

    async def cancel(self, request_id: int) -> None:
        frame = replica_pb2.RequestFrame(id=request_id, cancel=True)
        await self._call.write(replica_pb2.ExchangeRequest(frames=[frame]))

    async def responses(self, request_id: int) -> list[Reply]:
        """Every message for the request, up to and including the `done` one."""
        queue, messages = self._queues[request_id], []
        async with asyncio.timeout(RESPONSE_TIMEOUT_S):
            while not messages or not messages[-1].done:
                messages.append(await queue.get())
        return messages

    async def start(self, method: str, *args: Any, pickled: bool = False, **kwargs: Any) -> int:
        return await self.send(invocation=invocation(method, *args, pickled=pickled, **kwargs))

    async def invoke(self, method: str, *args: Any, **kwargs: Any) -> list[Reply]:
        return await self.responses(await self.start(method, *args, **kwargs))

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """The method's result (a list of items when it streams); raises
        `CallFailed` when the replica answers with an Error."""
        return result_of(await self.invoke(method, *args, **kwargs))

    async def ongoing_requests(self) -> int:
        """The replica's own count of requests in flight (GetStats)."""
        stats = await self.stub.GetStats(replica_pb2.GetStatsRequest())
        return stats.ongoing_requests

    async def http(self, method: str = "GET", path: str = "/", **fields: Any) -> HttpResult:
        request = replica_pb2.HttpRequest(method=method, path=path, **fields)
        return HttpResult(await self.responses(await self.send(http=request)))


def invocation(
    method: str, *args: Any, pickled: bool = False, **kwargs: Any
) -> replica_pb2.Invocation:
    if pickled:
        encoding, dump = replica_pb2.ENCODING_PICKLE, pickle.dumps
    else:
        encoding, dump = replica_pb2.ENCODING_JSON, lambda value: json.dumps(value).encode()
    arguments = replica_pb2.EncodedArguments(
        encoding=encoding,
        args=dump(list(args)) if args else b"",
        kwargs=dump(kwargs) if kwargs else b"",
    )
    return replica_pb2.Invocation(method_name=method, arguments=arguments, result_encoding=encoding)


def result_of(messages: list[Reply]) -> Any:
    last = messages[-1]
    if last.HasField("error"):
        raise CallFailed(last.error)
    values = [_decode(m.result) for m in messages if m.HasField("result")]
    streamed = len(messages) > 1 or not last.HasField("result")
    return values if streamed else values[0]


def _decode(payload: replica_pb2.Payload) -> Any:
    if payload.encoding == replica_pb2.ENCODING_PICKLE:
        return pickle.loads(payload.data)
    return json.loads(payload.data)


class HttpResult:
    """An HTTP answer put back together from its Exchange messages."""

    def __init__(self, messages: list[Reply]) -> None:
        self.messages = messages
        if messages[-1].HasField("error"):
            raise CallFailed(messages[-1].error)
        first = messages[0].http
        self.status = first.status
        self.headers = {h.name.decode(): h.value.decode() for h in first.headers}
        self.body = b"".join(m.http.body for m in messages)

    def json(self) -> Any:
        return json.loads(self.body)


async def call_once(replica: str | ReplicaRef, method: str, *args: Any) -> Any:
    """One call over a fresh Exchange stream; the decoded JSON result."""
    async with ExchangeClient(replica) as client:
        return await client.call(method, *args)


async def stats(replica: str | ReplicaRef) -> replica_pb2.GetStatsResponse:
    """The replica's GetStats answer."""
    async with channel_to(replica) as channel:
        stub = replica_pb2_grpc.ReplicaServiceStub(channel)
        return await stub.GetStats(replica_pb2.GetStatsRequest(), timeout=10)
