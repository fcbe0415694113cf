"""HTTP over Exchange: an `HttpRequest` becomes an ASGI scope, and whatever
answers it (an ASGI app, a Starlette `Response`, a plain value, a generator)
becomes `HttpResponse` messages.

The wire shape: the first message carries status, headers and the first
body chunk; later ones carry more body; the last has `done` set. A request
body may likewise arrive in chunks after the first message (`Inbound` hands
them to the app as they come); the stream splits big response bodies. User
errors become a plain 500 (the traceback goes to the replica's log, never to
the client); an error after the response started can only end the stream
with an INTERNAL `Error`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from capstan.internal.v1 import replica_pb2
from executors.replica.invoker import Invoker, Target, is_stream
from executors.replica.payload import jsonable

log = logging.getLogger("capstan.replica")

Emit = Callable[[replica_pb2.ResponseFrame], None]

_ASGI = {"version": "3.0", "spec_version": "2.4"}
_INTERNAL = 13


def scope_for(
    request: replica_pb2.HttpRequest, instance: Any, state: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ASGI scope of a proxied request; `path` includes the route prefix,
    which is also the `root_path`. `state` is what the app's lifespan set."""
    path = request.path or "/"
    return {
        "type": "http",
        "asgi": _ASGI,
        "http_version": request.http_version or "1.1",
        "method": request.method or "GET",
        "scheme": request.scheme or "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": request.query_string,
        "root_path": request.root_path,
        "headers": [(h.name, h.value) for h in request.headers],
        "client": (request.client_host, request.client_port) if request.client_host else None,
        "server": None,
        "state": dict(state) if state else {},
        "capstan.instance": instance,
    }


def empty_request(route_prefix: str) -> Any:
    """A bodiless GET of the route prefix, as a Starlette Request."""
    from starlette.requests import Request

    path = route_prefix or "/"
    request = replica_pb2.HttpRequest(method="GET", path=path)
    return Request(scope_for(request, None), inbound_for(request))


_DISCONNECT = {"type": "http.disconnect"}


class Inbound:
    """ASGI receive() for one request: its first message at once, later ones
    as their frames arrive (`put`), then `final` for ever once closed
    (http.disconnect when the response is over: streaming responses listen
    for it)."""

    __slots__ = ("_closed", "_final", "_items", "_waiter")

    def __init__(self, first: dict[str, Any], final: dict[str, Any] = _DISCONNECT) -> None:
        self._items = deque((first,))
        self._final = final
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None

    async def __call__(self) -> dict[str, Any]:
        items = self._items
        while not items:
            if self._closed:
                return self._final
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return items.popleft()

    def put(self, message: dict[str, Any]) -> None:
        self._items.append(message)
        self._wake()

    def close(self) -> None:
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def inbound_for(request: replica_pb2.HttpRequest) -> Inbound:
    """The receive() of an HTTP request: its first body chunk, and more to
    come when `more_body` is set."""
    first = {"type": "http.request", "body": request.body, "more_body": request.more_body}
    return Inbound(first)


def body_message(chunk: replica_pb2.BodyChunk) -> dict[str, Any]:
    """A later body chunk as an ASGI message."""
    return {"type": "http.request", "body": chunk.data, "more_body": not chunk.last}


class _Send:
    """ASGI send(): status and headers wait for the first body chunk; the
    last chunk is kept back to become the final (`done`) message."""

    __slots__ = ("_emit", "_id", "_start", "final", "started")

    def __init__(self, request_id: int, emit: Emit) -> None:
        self._emit = emit
        self._id = request_id
        self._start: dict[str, Any] | None = None
        self.started = False
        self.final: replica_pb2.HttpResponse | None = None

    async def __call__(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self._start = message
        elif kind == "http.response.body":
            self._body(message.get("body", b""), message.get("more_body", False))

    def _body(self, body: bytes, more: bool) -> None:
        start = self._start
        if start is not None:
            headers = [replica_pb2.Header(name=k, value=v) for k, v in start.get("headers", ())]
            http = replica_pb2.HttpResponse(status=start["status"], headers=headers, body=body)
            self._start, self.started = None, True
        elif self.started:
            http = replica_pb2.HttpResponse(body=body)
        else:
            raise RuntimeError("ASGI app sent a body before http.response.start")
        if more:
            self._emit(replica_pb2.ResponseFrame(id=self._id, http=http))
        else:
            self.final = http


async def serve_app(
    app: Any,
    instance: Any,
    state: dict[str, Any],
    request: replica_pb2.HttpRequest,
    receive: Inbound,
    request_id: int,
    emit: Emit,
) -> replica_pb2.ResponseFrame:
    """Answers the request with an ASGI app (the ingress); returns the final
    message and emits the ones before it."""
    scope = scope_for(request, instance, state)
    return await _run_asgi(app, scope, receive, request_id, emit)


async def _run_asgi(
    app: Any, scope: dict[str, Any], receive: Inbound, request_id: int, emit: Emit
) -> replica_pb2.ResponseFrame:
    send = _Send(request_id, emit)
    try:
        await app(scope, receive, send)
    except Exception as error:
        return failed(request_id, send.started, error)
    finally:
        receive.close()
    if send.final is None:
        if not send.started:
            return failed(request_id, False, RuntimeError("the ASGI app sent no response"))
        send.final = replica_pb2.HttpResponse()
    return replica_pb2.ResponseFrame(id=request_id, done=True, http=send.final)


async def serve_callable(
    invoker: Invoker,
    target: Target,
    instance: Any,
    request: replica_pb2.HttpRequest,
    receive: Inbound,
    request_id: int,
    emit: Emit,
) -> replica_pb2.ResponseFrame:
    """Answers the request with `target(starlette.Request)`, converting what
    it returns; returns the final message and emits the ones before it."""
    from starlette.requests import Request  # deferred: keeps start-up fast
    from starlette.responses import Response

    scope = scope_for(request, instance)
    try:
        result = await invoker.call(target, (Request(scope, receive),), {})
    except Exception as error:
        return failed(request_id, False, error)
    if isinstance(result, Response):
        return await _run_asgi(result, scope, receive, request_id, emit)
    if is_stream(result):
        return await _stream(invoker, result, request_id, emit)
    try:
        body, content_type = render(result)
    except (TypeError, ValueError) as error:
        return failed(request_id, False, error)
    return _whole(request_id, 200, content_type, body)


def render(value: Any) -> tuple[bytes, bytes]:
    """A plain result as a body and its content type."""
    if isinstance(value, str):
        return value.encode(), b"text/plain; charset=utf-8"
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value), b"application/octet-stream"
    body = json.dumps(
        value, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=jsonable
    )
    return body.encode(), b"application/json"


async def _stream(
    invoker: Invoker, stream: Any, request_id: int, emit: Emit
) -> replica_pb2.ResponseFrame:
    # Items are str or bytes chunks; anything else goes as one JSON line each.
    started = False
    try:
        async for item in invoker.items(stream):
            body, content_type = render(item)
            if content_type == b"application/json":
                body, content_type = body + b"\n", b"application/x-ndjson"
            if started:
                http = replica_pb2.HttpResponse(body=body)
            else:
                headers = [replica_pb2.Header(name=b"content-type", value=content_type)]
                http = replica_pb2.HttpResponse(status=200, headers=headers, body=body)
                started = True
            emit(replica_pb2.ResponseFrame(id=request_id, http=http))
    except Exception as error:
        return failed(request_id, started, error)
    if not started:
        return _whole(request_id, 200, b"text/plain; charset=utf-8", b"")
    return replica_pb2.ResponseFrame(id=request_id, done=True, http=replica_pb2.HttpResponse())


def _whole(
    request_id: int, status: int, content_type: bytes, body: bytes
) -> replica_pb2.ResponseFrame:
    headers = [
        replica_pb2.Header(name=b"content-type", value=content_type),
        replica_pb2.Header(name=b"content-length", value=str(len(body)).encode()),
    ]
    http = replica_pb2.HttpResponse(status=status, headers=headers, body=body)
    return replica_pb2.ResponseFrame(id=request_id, done=True, http=http)


def failed(request_id: int, started: bool, error: Exception) -> replica_pb2.ResponseFrame:
    """The final message for a request whose handler raised `error`."""
    log.error("HTTP request failed", exc_info=error)
    if not started:
        return _whole(request_id, 500, b"text/plain; charset=utf-8", b"Internal Server Error")
    failure = replica_pb2.Error(code=_INTERNAL, message="the response failed after it started")
    return replica_pb2.ResponseFrame(id=request_id, done=True, error=failure)
