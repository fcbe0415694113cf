"""One caller's Exchange stream: many requests in flight, told apart by id.

This is every request's path, so it stays lean: each admitted request is
one task; its final message is built by the task's done-callback, which is
also where accounting happens (so a request cancelled before it ever ran is
still answered and counted out). Messages go to one queue that the servicer
drains, which keeps writes to the gRPC stream serial (one writer, no lock);
a response body too big for one frame is split on its way in.

Frames after a request's first (body chunks, WebSocket messages) go to that
request's `Inbound`, the app's receive().
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import time
import traceback
from typing import Any

import grpc

from capstan.context import set_multiplexed_model_id
from capstan.errors import CapstanError
from capstan.framing import CHUNK_BYTES, split_http
from capstan.internal.v1 import replica_pb2
from executors.replica import access_log, http, websocket
from executors.replica.invoker import Target, is_stream
from executors.replica.payload import decode_arguments, encode_result
from executors.replica.worker import Worker

log = logging.getLogger("capstan.replica")

_UNKNOWN = grpc.StatusCode.UNKNOWN.value[0]
_CANCELLED = grpc.StatusCode.CANCELLED.value[0]
_INTERNAL = grpc.StatusCode.INTERNAL.value[0]
_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]
_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
_INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]

# Frames from these folders are Capstan's or asyncio's, not the user's.
_NOT_USER_CODE = tuple(
    os.path.dirname(path) + os.sep
    for path in (asyncio.__file__, concurrent.futures.__file__, __file__)
)

Response = replica_pb2.ResponseFrame
# Ray Serve's header naming the model an HTTP request is for.
MODEL_ID_HEADER = b"serve_multiplexed_model_id"


class ExchangeStream:
    """Reads request frames, runs them, and queues response frames on `out`;
    `None` on `out` means the stream is over (the caller closed its side and nothing
    is in flight, or the replica is shutting down)."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._tasks: dict[int, asyncio.Task[Response]] = {}
        # The receive() of requests that take more frames after their first.
        self._inbound: dict[int, http.Inbound] = {}
        self.out: asyncio.Queue[Response | None] = asyncio.Queue()
        self._reading = True
        self._closing = False
        self._ended = False
        # Each request's label and start, for its access line; None when off.
        self._access: dict[int, tuple[str, float]] | None = {} if access_log.is_on() else None

    async def read(self, context: grpc.aio.ServicerContext) -> None:
        """Admits each request as it arrives, until the caller half-closes."""
        try:
            # context.read() measured a little cheaper than `async for`.
            read = context.read
            accept = self._accept
            while (message := await read()) is not grpc.aio.EOF:
                for frame in message.frames:
                    accept(frame)
        finally:
            self._reading = False
            self._end_if_idle()

    def close(self) -> None:
        """Ends the stream once the requests in flight finish; new ones are
        rejected meanwhile. For shutdown, after draining."""
        self._closing = True
        self._end_if_idle()

    def cancel_all(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()

    def _accept(self, request: replica_pb2.RequestFrame) -> None:
        kind = request.WhichOneof("kind")
        rid = request.id
        if kind == "cancel":
            task = self._tasks.get(rid)
            if task is not None:
                task.cancel()
            return
        if kind == "body" or kind == "websocket":
            inbound = self._inbound.get(rid)
            if inbound is not None:  # else the request already ended
                if kind == "body":
                    inbound.put(http.body_message(request.body))
                else:
                    inbound.put(websocket.client_message(request.websocket))
            return
        worker = self._worker
        if worker.draining or self._closing:
            self._reject(rid, _UNAVAILABLE, f"replica {worker.config.replica_id} is draining")
        elif worker.ongoing >= worker.max_concurrent_queries:
            limit = worker.max_concurrent_queries
            self._reject(rid, _EXHAUSTED, f"replica is at max_concurrent_queries ({limit})")
        elif rid in self._tasks or kind is None:
            why = "is already in flight" if kind else "has no invocation or http request"
            self._emit(Response(id=rid, done=True, error=_error(_INVALID, f"request {rid} {why}")))
        else:
            worker.ongoing += 1
            worker.total += 1
            if kind == "invocation":
                coro = self._invoke(rid, request.invocation)
            else:
                coro = self._http(rid, request.http, self._inbound_for(rid, request.http))
            task = asyncio.get_running_loop().create_task(coro)
            task.add_done_callback(functools.partial(self._finish, rid))
            self._tasks[rid] = task
            if self._access is not None:
                self._access[rid] = (access_log.label(request), time.perf_counter())

    def _inbound_for(self, rid: int, request: replica_pb2.HttpRequest) -> http.Inbound:
        if request.websocket:
            inbound = self._inbound[rid] = websocket.inbound_for(request)
        elif request.more_body:
            inbound = self._inbound[rid] = http.inbound_for(request)
            # Now the caller may send the rest: a rejection can no longer come.
            self._emit(Response(id=rid, accepted=True))
        else:
            inbound = http.inbound_for(request)
        return inbound

    def _reject(self, rid: int, code: int, message: str) -> None:
        error = replica_pb2.Error(code=code, message=message, rejected=True)
        self._emit(Response(id=rid, done=True, error=error))

    def _emit(self, message: Response) -> None:
        if message.WhichOneof("kind") == "http" and len(message.http.body) > CHUNK_BYTES:
            for part in split_http(message):
                self.out.put_nowait(part)
        else:
            self.out.put_nowait(message)

    def _finish(self, rid: int, task: asyncio.Task[Response]) -> None:
        del self._tasks[rid]
        if self._inbound:
            self._inbound.pop(rid, None)
        worker = self._worker
        worker.ongoing -= 1
        if task.cancelled():
            message = Response(
                id=rid, done=True, error=_error(_CANCELLED, "the request was cancelled")
            )
        elif (failure := task.exception()) is not None:
            log.error("request %d failed inside the replica", rid, exc_info=failure)
            message = Response(id=rid, done=True, error=_error(_INTERNAL, "the replica failed"))
        else:
            message = task.result()
        self._emit(message)
        if self._access is not None:
            what, started = self._access.pop(rid)
            access_log.finished(what, started, access_log.outcome(message))
        if not worker.ongoing and worker.draining:
            worker.idle.set()
        self._end_if_idle()

    def _end_if_idle(self) -> None:
        if not self._ended and not self._tasks and (self._closing or not self._reading):
            self._ended = True
            self.out.put_nowait(None)

    async def _invoke(self, rid: int, invocation: replica_pb2.Invocation) -> Response:
        worker = self._worker
        if invocation.multiplexed_model_id:  # this task's own context
            set_multiplexed_model_id(invocation.multiplexed_model_id)
        try:
            method = invocation.method_name or "__call__"
            target = worker.target(method)
            args, kwargs = decode_arguments(invocation.arguments)
            if not args and not kwargs and method == "__call__" and target.wants_request:
                # Ray Serve 1.x hands an HTTP-style __call__(self, request) an empty
                # request when a handle calls it without arguments; ported apps rely on it.
                args = (http.empty_request(worker.config.deployment.route_prefix),)
            if invocation.arguments.encoding != replica_pb2.ENCODING_PICKLE:
                # JSON comes from other languages: say when it misses the signature.
                # Python handles skip the check (and its cost); a TypeError is theirs.
                target.check_arguments(args, kwargs)
        except CapstanError as error:
            return Response(id=rid, done=True, error=_error(error.code.value[0], error.message))
        try:
            result = await worker.invoker.call(target, args, kwargs)
        except Exception as error:
            return _user_error(rid, error)
        if is_stream(result):
            return await self._stream(rid, target, result, invocation.result_encoding)
        try:
            payload = encode_result(result, invocation.result_encoding, target.name)
        except CapstanError as error:
            return Response(id=rid, done=True, error=_error(error.code.value[0], error.message))
        return Response(id=rid, done=True, result=payload)

    async def _stream(self, rid: int, target: Target, stream: Any, encoding: int) -> Response:
        try:
            async for item in self._worker.invoker.items(stream):
                try:
                    payload = encode_result(item, encoding, target.name)
                except CapstanError as error:
                    return Response(
                        id=rid, done=True, error=_error(error.code.value[0], error.message)
                    )
                self._emit(Response(id=rid, result=payload))
        except Exception as error:
            return _user_error(rid, error)
        return Response(id=rid, done=True)

    async def _http(
        self, rid: int, request: replica_pb2.HttpRequest, receive: http.Inbound
    ) -> Response:
        worker = self._worker
        for header in request.headers:
            if header.name == MODEL_ID_HEADER:
                set_multiplexed_model_id(header.value.decode("latin-1"))
        user = worker.user
        app, state, emit = user.asgi_app, worker.asgi_state, self._emit
        if request.websocket:
            if app is None:
                return websocket.refused(rid)
            return await websocket.serve_websocket(
                app, user.target, state, request, receive, rid, emit
            )
        if app is not None:
            return await http.serve_app(app, user.target, state, request, receive, rid, emit)
        try:
            target = worker.target("__call__")
        except CapstanError as error:
            return http.failed(rid, False, error)
        return await http.serve_callable(
            worker.invoker, target, user.target, request, receive, rid, emit
        )


def _error(code: int, message: str) -> replica_pb2.Error:
    return replica_pb2.Error(code=code, message=message)


def _user_error(rid: int, error: Exception) -> Response:
    failure = replica_pb2.Error(
        code=_UNKNOWN,
        message=f"{type(error).__name__}: {error}",
        exception_type=type(error).__name__,
        traceback=user_traceback(error),
    )
    return Response(id=rid, done=True, error=failure)


def user_traceback(error: BaseException) -> str:
    """The traceback of an exception from user code, without the frames of
    the replica and asyncio around it."""
    frames = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if not frame.filename.startswith(_NOT_USER_CODE)
    ]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)]
    lines.extend(traceback.format_exception_only(error))
    return "".join(lines)
