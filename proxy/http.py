"""The HTTP proxy: a raw ASGI app that forwards each request to a replica.

The hot path is a plain ASGI callable rather than Starlette: per request it
does one route lookup, builds one RequestFrame in place and copies nothing
it can avoid. A body larger than one chunk is streamed (proxy/upload.py),
WebSockets are relayed (proxy/websocket.py), and a request that runs past
its deployment's request_timeout_s gets 504 and is cancelled on the replica.
`/-/healthz`, `/-/routes` and `/-/metrics` are answered here too, and every
request is counted and access-logged by the RequestObserver.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Coroutine
from typing import Any

from capstan import errors
from capstan.internal.v1 import replica_pb2
from proxy.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from proxy.metrics import ProxyMetrics
from proxy.observer import RequestObserver
from proxy.replica_client import Replies
from proxy.router import Router, within
from proxy.routes import Route, RouteTable
from proxy.upload import ClientGone, TooLarge, Upload, read_start
from proxy.websocket import relay_websocket

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Any
Send = Any

DEFAULT_MAX_BODY_BYTES = 64 << 20
# Ray Serve's request id header: echoed when the caller sends one, else made.
REQUEST_ID = b"x-request-id"
# Ray Serve's header naming the multiplexed model a request is for.
MODEL_ID = b"serve_multiplexed_model_id"
_TEXT = [(b"content-type", b"text/plain; charset=utf-8")]
_JSON = [(b"content-type", b"application/json")]
# Logged (as nginx does) for a request whose client left before the answer.
_CLIENT_GONE = 499
_NO_ROUTE = b"No route matches this path; GET /-/routes lists the routes this proxy serves.\n"


class HttpProxy:
    """The proxy's ASGI app. `routes` is replaced whole on each table update."""

    def __init__(
        self,
        router: Router,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        disconnect_check_s: float = 0.05,
        observer: RequestObserver | None = None,
    ) -> None:
        self.router = router
        self.observer = observer or RequestObserver(ProxyMetrics(router))
        self.routes = RouteTable()
        self.max_body_bytes = max_body_bytes
        self.disconnect_check_s = disconnect_check_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "websocket":
                await self._websocket(scope, receive, send)
            else:
                await _lifespan(receive, send)
            return
        path = scope["path"]
        if path.startswith("/-/"):
            await self._admin(path, send)
            return
        route = self.routes.match(path)
        if route is None:
            await _respond(send, 404, _NO_ROUTE)
            return
        started_s = time.perf_counter()
        try:
            body, more = await read_start(receive, self.max_body_bytes)
        except ClientGone:
            return
        except TooLarge:
            await self._too_large(send)
            return
        request, request_id, model_id = _exchange_request(scope, body, route)
        upload = None
        if more:
            request.http.more_body = True
            upload = Upload(receive, self.max_body_bytes, len(body))
        watch = DisconnectWatch(receive, self.disconnect_check_s, upload is not None)
        status, replica = _CLIENT_GONE, ""
        try:
            async with watch:
                status, replica = await self._forward(
                    route.deployment, request, request_id, model_id, send, watch, upload
                )
        except errors.CapstanError as exc:
            status, text = _error_status(exc)
            await _respond(send, status, text, [*_TEXT, (REQUEST_ID, request_id)])
        else:
            if watch.is_too_large and not watch.has_responded:
                status = 413
                await self._too_large(send)
        self.observer.done(route.deployment, "http", scope["method"], path, status, started_s,
                           replica, request_id.decode("latin-1"))  # fmt: skip

    async def _forward(
        self,
        deployment: str,
        request: replica_pb2.RequestFrame,
        request_id: bytes,
        model_id: str,
        send: Send,
        watch: DisconnectWatch,
        upload: Upload | None,
    ) -> tuple[int, str]:
        """Sends the request and streams the response back; returns its
        status and the replica that answered."""
        # The deadline runs until the response starts: a streamed response
        # may then run long.
        seconds = self.router.request_timeout_s(deployment)
        started = self._start(deployment, request, model_id, watch, upload)
        replies, reply = await within(seconds, deployment, started)
        try:
            watch.has_responded = True
            part = reply.http
            headers = [(h.name, h.value) for h in part.headers]
            if not any(name.lower() == REQUEST_ID for name, _ in headers):
                headers.append((REQUEST_ID, request_id))
            start = {"type": "http.response.start", "status": part.status, "headers": headers}
            await send(start)
            await send(
                {"type": "http.response.body", "body": part.body, "more_body": not reply.done}
            )
            if not reply.done:
                await self._stream_rest(deployment, replies, send)
        finally:
            replies.cancel()
        return part.status, replies.address

    async def _start(
        self,
        deployment: str,
        request: replica_pb2.RequestFrame,
        model_id: str,
        watch: DisconnectWatch,
        upload: Upload | None,
    ) -> tuple[Replies, replica_pb2.ResponseFrame]:
        """Sends the request (and starts its upload); returns its replies and
        the first response frame."""
        replies = await self.router.send(deployment, request, model_id)
        try:
            if upload is not None:
                await replies.__anext__()  # the replica's `accepted`
                watch.pump(upload.send_rest(replies))
            return replies, await replies.__anext__()
        except BaseException:
            replies.cancel()
            raise

    @staticmethod
    async def _stream_rest(deployment: str, replies: Replies, send: Send) -> None:
        try:
            async for reply in replies:
                message = {"type": "http.response.body", "body": reply.http.body}
                message["more_body"] = not reply.done
                await send(message)
        except errors.CapstanError as exc:
            # Too late for a status. Returning without the final body makes
            # uvicorn close the connection, which tells the client the body
            # is incomplete.
            log.warning("response from deployment %r broke off: %s", deployment, exc)

    async def _too_large(self, send: Send) -> None:
        limit = f"request body exceeds the proxy's limit of {self.max_body_bytes} bytes\n"
        await _respond(send, 413, limit.encode())

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.routes.match(scope["path"])
        if route is None:
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008, "reason": "no route"})
            return
        request, _, model_id = _exchange_request(scope, b"", route)
        request.http.websocket = True
        await relay_websocket(self.router, route.deployment, request, model_id, receive, send)

    async def _admin(self, path: str, send: Send) -> None:
        if path == "/-/healthz":
            await _respond(send, 200, b"success")
        elif path == "/-/routes":
            await _respond(send, 200, json.dumps(self.routes.as_dict()).encode(), _JSON)
        elif path == "/-/metrics":
            exposition = self.observer.metrics.exposition()
            await _respond(send, 200, exposition, [(b"content-type", METRICS_CONTENT_TYPE)])
        else:
            known = b"/-/healthz, /-/routes or /-/metrics"
            await _respond(send, 404, b"Unknown /-/ endpoint; try " + known + b".\n")


class DisconnectWatch:
    """Cancels the request's task when the client disconnects, so the replica
    is told to cancel too. uvicorn never cancels an app on disconnect; it only
    answers receive() with http.disconnect. Watching costs a task, so it starts
    only once a request has run for `delay_s`; most finish before then.

    A streamed upload is the one other reader of receive(): with
    `has_upload`, watching waits for `pump`, which runs the upload in the
    watcher first; a body past the limit ends the request the same way, with
    `is_too_large` set."""

    __slots__ = (
        "_delay_s",
        "_pump",
        "_receive",
        "_task",
        "_timer",
        "_watcher",
        "disconnected",
        "has_responded",
        "is_too_large",
    )

    def __init__(self, receive: Receive, delay_s: float, has_upload: bool = False) -> None:
        self._receive = receive
        self._delay_s = -1.0 if has_upload else delay_s
        self._task: asyncio.Task[Any] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._pump: Coroutine[Any, Any, None] | None = None
        self.disconnected = False
        self.is_too_large = False
        self.has_responded = False

    async def __aenter__(self) -> DisconnectWatch:
        self._task = asyncio.current_task()
        if self._delay_s >= 0:
            self._timer = asyncio.get_running_loop().call_later(self._delay_s, self._start)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> bool:
        if self._timer is not None:
            self._timer.cancel()
        watcher = self._watcher
        if watcher is None:
            return False
        self._watcher = None
        watcher.cancel()
        await asyncio.wait([watcher])  # unlike `await`, never raises its cancellation
        if self._pump is not None:
            self._pump.close()  # a no-op unless the watcher was cancelled before it began
        # Our own cancellation of the request becomes a quiet end, as
        # asyncio.timeout does; anyone else's still propagates.
        return bool(
            self.disconnected
            and exc_type is asyncio.CancelledError
            and self._task is not None
            and self._task.uncancel() == 0
        )

    def pump(self, upload: Coroutine[Any, Any, None]) -> None:
        """Starts watching now, after running `upload` to its end."""
        self._pump = upload
        self._start()

    def _start(self) -> None:
        self._timer = None
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        try:
            if self._pump is not None:
                await self._pump
            while (await self._receive())["type"] != "http.disconnect":
                pass
        except TooLarge:
            self.is_too_large = True
        except ClientGone:
            pass
        if self._watcher is not None and self._task is not None:
            self.disconnected = True
            self._task.cancel()


def _exchange_request(
    scope: Scope, body: bytes, route: Route
) -> tuple[replica_pb2.RequestFrame, bytes, str]:
    """The frame for the replica, the request's id (the caller's X-Request-ID
    if it sent one, else a new one that the replica sees too), and the
    multiplexed model it asks for ("" for none)."""
    # Filled in place: building an HttpRequest and then assigning it to the
    # RequestFrame would copy the body.
    request = replica_pb2.RequestFrame()
    http = request.http
    http.method = scope.get("method", "GET")  # a WebSocket scope has none
    http.scheme = scope["scheme"]
    http.path = scope["path"]
    http.query_string = scope["query_string"]
    add_header = http.headers.add
    request_id = b""
    model_id = ""
    for name, value in scope["headers"]:
        add_header(name=name, value=value)
        if name == REQUEST_ID:  # ASGI servers lower-case header names
            request_id = value
        elif name == MODEL_ID:
            model_id = value.decode("latin-1")
    if not request_id:
        request_id = uuid.uuid4().hex.encode()
        add_header(name=REQUEST_ID, value=request_id)
    http.body = body
    # ASGI's root_path for an app mounted at "/" is "", not "/".
    http.root_path = route.prefix if route.prefix != "/" else ""
    client = scope.get("client")
    if client:
        http.client_host, http.client_port = client[0], client[1] or 0
    http.http_version = scope.get("http_version", "1.1")
    return request, request_id, model_id


def _error_status(exc: errors.CapstanError) -> tuple[int, bytes]:
    """The one place Capstan errors become HTTP statuses. User code's
    tracebacks and messages stay in the replica's log."""
    if isinstance(exc, errors.Unavailable | errors.BackPressure):
        return 503, f"{exc.message}\n".encode()
    if isinstance(exc, errors.NotFound):
        return 404, f"{exc.message}\n".encode()
    if isinstance(exc, errors.DeadlineExceeded):
        return 504, b"The deployment did not answer in time.\n"
    if isinstance(exc, errors.UserCodeError):
        kind = exc.exception_type or "an exception"
        return 500, f"Internal Server Error: the deployment raised {kind}.\n".encode()
    log.error("request failed: %s", exc)
    return 500, b"Internal Server Error\n"


async def _respond(send: Send, status: int, body: bytes, headers: list[Any] = _TEXT) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        else:
            await send({"type": "lifespan.shutdown.complete"})
            return
