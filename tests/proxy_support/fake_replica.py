"""A small, real ReplicaService: Exchange per the proto contract, with scripted
behaviours, for testing the proxy without the real replica worker.

Invocation methods: "" / "echo" (returns the args JSON), "sleep" ([seconds]),
"stream" ([n] items), "fail" (a user exception), "whoami"; anything else is
NOT_FOUND. HTTP paths (after the route prefix): "/sleep?s=SECONDS",
"/stream?n=N", "/fail"; anything else echoes the request as JSON.

Run as a script (`python -m tests.proxy_support.fake_replica --port 0`) it serves until killed and
prints "fake replica listening PORT".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.parse
from collections.abc import AsyncIterator

import grpc

from capstan.internal.v1 import replica_pb2, replica_pb2_grpc
from tests.proxy_support import loopback

Reply = replica_pb2.ResponseFrame


async def _frames(
    messages: AsyncIterator[replica_pb2.ExchangeRequest],
) -> AsyncIterator[replica_pb2.RequestFrame]:
    async for message in messages:
        for frame in message.frames:
            yield frame


class FakeReplica(replica_pb2_grpc.ReplicaServiceServicer):
    """Counts what it sees; rejects past `max_concurrent` or when `reject_all`."""

    def __init__(self, name: str = "replica", max_concurrent: int = 1_000_000) -> None:
        self.name = name
        self.max_concurrent = max_concurrent
        self.reject_all = False
        self.ongoing = 0
        self.max_seen = 0
        self.started = 0
        self.rejected = 0
        self.cancelled = 0
        self.streams_opened = 0
        self.changed = asyncio.Condition()

    async def Exchange(
        self, request_iterator: AsyncIterator[replica_pb2.ExchangeRequest], context: object
    ) -> None:
        self.streams_opened += 1
        out: asyncio.Queue[Reply | None] = asyncio.Queue()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._read(request_iterator, out, tasks))
            while (reply := await out.get()) is not None:
                message = replica_pb2.ExchangeResponse(
                    frames=[reply], ongoing_requests=self.ongoing
                )
                await context.write(message)  # type: ignore[attr-defined]

    async def wait_for(self, predicate: object, timeout_s: float = 5.0) -> None:
        """Waits until `predicate()` holds, re-checked whenever a count changes."""
        async with asyncio.timeout(timeout_s), self.changed:
            await self.changed.wait_for(predicate)  # type: ignore[arg-type]

    async def _read(
        self,
        requests: AsyncIterator[replica_pb2.ExchangeRequest],
        out: asyncio.Queue[Reply | None],
        tasks: asyncio.TaskGroup,
    ) -> None:
        running: dict[int, asyncio.Task[None]] = {}
        cancel_requested: set[int] = set()
        async for request in _frames(requests):
            if request.cancel:
                if request.id in running:
                    cancel_requested.add(request.id)
                    running[request.id].cancel()
                continue
            if self.reject_all or self.ongoing >= self.max_concurrent:
                self.rejected += 1
                error = replica_pb2.Error(code=14, message=f"{self.name} is full", rejected=True)
                out.put_nowait(Reply(id=request.id, done=True, error=error))
                await self._notify()
                continue
            self.ongoing += 1
            self.started += 1
            self.max_seen = max(self.max_seen, self.ongoing)
            task = tasks.create_task(self._handle(request, out, cancel_requested))
            running[request.id] = task
            task.add_done_callback(lambda _, rid=request.id: running.pop(rid, None))
            await self._notify()
        await asyncio.gather(*running.values(), return_exceptions=True)
        out.put_nowait(None)

    async def _handle(
        self,
        request: replica_pb2.RequestFrame,
        out: asyncio.Queue[Reply | None],
        cancel_requested: set[int],
    ) -> None:
        last: Reply | None = None
        try:
            async for reply in self._respond(request):
                if last is not None:
                    out.put_nowait(last)
                last = reply
        except asyncio.CancelledError:
            if request.id not in cancel_requested:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            self.cancelled += 1
            last = Reply(error=replica_pb2.Error(code=1, message="cancelled"))
        finally:
            self.ongoing -= 1
        assert last is not None
        last.id, last.done = request.id, True
        out.put_nowait(last)
        await self._notify()

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    def _respond(self, request: replica_pb2.RequestFrame) -> AsyncIterator[Reply]:
        if request.HasField("http"):
            return self._http(request.id, request.http)
        return self._invoke(request.id, request.invocation)

    async def _invoke(self, rid: int, invocation: replica_pb2.Invocation) -> AsyncIterator[Reply]:
        args = json.loads(invocation.arguments.args or b"[]")
        method = invocation.method_name
        if method in ("", "echo"):
            yield _result(rid, invocation.arguments.args or b"[]")
        elif method == "sleep":
            await asyncio.sleep(args[0])
            yield _result(rid, json.dumps(self.name).encode())
        elif method == "whoami":
            yield _result(rid, json.dumps(self.name).encode())
        elif method == "stream":
            for i in range(args[0]):
                yield _result(rid, json.dumps(i).encode())
        elif method == "greet":  # greet(name, punct="!")
            punct = json.loads(invocation.arguments.kwargs or b"{}").get("punct", "!")
            text = f"Hello, {args[0]}{punct} (model {invocation.multiplexed_model_id})"
            yield _result(rid, json.dumps(text).encode())
        elif method == "nan":  # what json.dumps writes for float("nan")
            yield _result(rid, b"NaN")
        elif method == "fail":
            yield Reply(id=rid, error=_user_error())
        else:
            yield Reply(id=rid, error=replica_pb2.Error(code=5, message=f"no method {method!r}"))

    async def _http(self, rid: int, http: replica_pb2.HttpRequest) -> AsyncIterator[Reply]:
        query = dict(urllib.parse.parse_qsl(http.query_string.decode()))
        route = http.path[len(http.root_path) :]
        if route == "/sleep":
            await asyncio.sleep(float(query.get("s", "0")))
        if route == "/stream":
            yield _http_reply(rid, 200, b"part0;", [(b"content-type", b"text/plain")])
            for i in range(1, int(query.get("n", "3"))):
                await asyncio.sleep(float(query.get("gap", "0")))
                yield Reply(id=rid, http=replica_pb2.HttpResponse(body=f"part{i};".encode()))
            return
        if route == "/fail":
            yield Reply(id=rid, error=_user_error())
            return
        body = {
            "replica": self.name,
            "method": http.method,
            "path": http.path,
            "root_path": http.root_path,
            "query": http.query_string.decode(),
            "body_len": len(http.body),
            "headers": {h.name.decode(): h.value.decode() for h in http.headers},
            "client_host": http.client_host,
            "http_version": http.http_version,
        }
        data = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
        yield _http_reply(rid, 200, data, headers)


def _result(rid: int, data: bytes) -> Reply:
    payload = replica_pb2.Payload(encoding=replica_pb2.ENCODING_JSON, data=data)
    return Reply(id=rid, result=payload)


def _http_reply(rid: int, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> Reply:
    response = replica_pb2.HttpResponse(status=status, body=body)
    for name, value in headers:
        response.headers.add(name=name, value=value)
    return Reply(id=rid, http=response)


def _user_error() -> replica_pb2.Error:
    return replica_pb2.Error(
        code=2,
        message="boom: secret-detail",
        exception_type="ValueError",
        traceback='Traceback (most recent call last):\n  File "app.py", line 1\nValueError: boom',
    )


async def serve(replica: FakeReplica, port: int = 0) -> tuple[grpc.aio.Server, int]:
    """A started grpc.aio server for `replica` on 127.0.0.1 and its port."""
    add = replica_pb2_grpc.add_ReplicaServiceServicer_to_server
    return await loopback.serve(add, replica, port)


async def _main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--name", default="replica")
    options = parser.parse_args()
    server, port = await serve(FakeReplica(options.name), options.port)
    print(f"fake replica listening {port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(_main())
    except KeyboardInterrupt:
        sys.exit(0)
