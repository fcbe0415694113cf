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
from capstan.v1 import deployment_pb2, replica_pb2


def decode(payload: deployment_pb2.Payload) -> Any:
    """A result payload as a Python value."""
    if payload.encoding == deployment_pb2.ENCODING_PICKLE:
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
        self._router, self._watcher = self.run(self._open())

    async def _open(self) -> tuple[Any, Any]:
        from proxy.router import Router
        from proxy.watcher import RouteWatcher

        router = Router()
        watcher = RouteWatcher(self.address, router)
        await watcher.start()
        return router, watcher

    def submit(self, coroutine: Coroutine) -> concurrent.futures.Future:
        """Runs a coroutine on the runtime's loop; usable from any thread."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def run(self, coroutine: Coroutine) -> Any:
        """Runs a coroutine on the runtime's loop and waits for its value."""
        return self.submit(coroutine).result()

    async def call(self, deployment: str, invocation: replica_pb2.Invocation) -> Any:
        return decode(await self._router.call(deployment, invocation))

    async def stream(
        self, deployment: str, invocation: replica_pb2.Invocation
    ) -> AsyncIterator[Any]:
        async for payload in self._router.stream(deployment, invocation):
            yield decode(payload)

    async def wait_for_deployment(self, deployment: str, timeout_s: float) -> None:
        """Until the route table lists a live replica of the deployment."""
        await self._watcher.wait_for(lambda: self._router.has_replicas(deployment), timeout_s)

    def close(self) -> None:
        async def _close() -> None:
            await self._watcher.close()
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
