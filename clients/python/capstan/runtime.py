"""The process-wide routing runtime behind handles: one background event loop
running the proxy's Router, fed by the control plane's route stream.

One loop per process keeps gRPC channels on the loop that made them, lets
blocking code (`.result()`) and async code (`await`) share the same replicas'
streams, and survives the control plane going away: the Router keeps the last
route table it received.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import threading
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import cloudpickle

from capstan.client import default_address
from capstan.errors import NotFound
from capstan.internal.v1 import replica_pb2
from capstan.links import ClusterLinks
from capstan.v1 import controlplane_pb2

# How long a call waits for a deployment it has not heard of to appear in
# the route table: a handle used right after deploy() may be a table behind.
APPEAR_TIMEOUT_S = 10.0


def decode(payload: replica_pb2.Payload) -> Any:
    """A result payload as a Python value."""
    if payload.encoding == replica_pb2.ENCODING_PICKLE:
        return cloudpickle.loads(payload.data)
    return json.loads(payload.data) if payload.data else None


class Runtime:
    """Owns the background loop, the Router and the route watcher."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="capstan-runtime")
        self._thread.daemon = True  # handles must never keep a script alive
        self._thread.start()
        self.run(self._open())

    async def _open(self) -> None:
        from proxy.router import Router
        from proxy.watcher import RouteWatcher

        self._router = Router()
        self._table_changed = asyncio.Event()
        self._watcher = RouteWatcher(self.address, self._apply)
        self._watch = asyncio.get_running_loop().create_task(self._watcher.run())

    def _apply(self, table: controlplane_pb2.WatchRoutesResponse) -> None:
        self._router.update(table.endpoints, ClusterLinks.from_proto(table.links))
        self._table_changed.set()
        self._table_changed = asyncio.Event()

    def submit(self, coroutine: Coroutine) -> concurrent.futures.Future:
        """Runs a coroutine on the runtime's loop; usable from any thread."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def run(self, coroutine: Coroutine) -> Any:
        """Runs a coroutine on the runtime's loop and waits for its value."""
        return self.submit(coroutine).result()

    async def call(self, deployment: str, invocation: replica_pb2.Invocation) -> Any:
        """The call's result; DeadlineExceeded past the deployment's request_timeout_s."""
        from proxy.router import within

        if self._watcher.revision is None:  # the table says what the timeout is
            await self._watcher.wait_ready(APPEAR_TIMEOUT_S)
        seconds = self._router.request_timeout_s(deployment)
        return await within(seconds, deployment, self._call(deployment, invocation))

    async def _call(self, deployment: str, invocation: replica_pb2.Invocation) -> Any:
        replies = await self._send(deployment, invocation)
        try:
            reply = await replies.__anext__()
        finally:
            replies.cancel()
        return decode(reply.result)

    async def stream(
        self, deployment: str, invocation: replica_pb2.Invocation
    ) -> AsyncIterator[Any]:
        replies = await self._send(deployment, invocation)
        try:
            async for reply in replies:
                if reply.HasField("result"):
                    yield decode(reply.result)
        finally:
            replies.cancel()

    async def _send(self, deployment: str, invocation: replica_pb2.Invocation):
        request = replica_pb2.RequestFrame(invocation=invocation)
        model_id = invocation.multiplexed_model_id
        if self._watcher.revision is None:  # only until the first table arrives
            await self._watcher.wait_ready(APPEAR_TIMEOUT_S)
        try:
            return await self._router.send(deployment, request, model_id)
        except NotFound:
            await self._wait_for(deployment, APPEAR_TIMEOUT_S)
            return await self._router.send(deployment, request, model_id)

    async def _wait_for(self, deployment: str, timeout_s: float) -> None:
        """Until the route table has the deployment, or the timeout passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while deployment not in self._router.snapshot():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return  # the caller's retry raises NotFound
            try:
                async with asyncio.timeout(remaining):
                    await self._table_changed.wait()
            except TimeoutError:
                return

    def close(self) -> None:
        async def _close() -> None:
            self._watch.cancel()
            await asyncio.wait([self._watch])
            await self._router.close()

        try:
            self.run(_close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)


_runtime: Runtime | None = None
_pid = 0
_lock = threading.Lock()


def get_runtime(address: str | None = None) -> Runtime:
    """This process's runtime, started on first use (and again after a fork,
    since gRPC channels do not survive one)."""
    global _runtime, _pid
    with _lock:
        if _runtime is None or _pid != os.getpid():
            _runtime = Runtime(address or default_address())
            _pid = os.getpid()
        return _runtime


def close_runtime() -> None:
    """Stops this process's runtime, if one was started."""
    global _runtime
    with _lock:
        if _runtime is not None and _pid == os.getpid():
            _runtime.close()
        _runtime = None
