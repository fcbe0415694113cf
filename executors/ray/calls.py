"""Blocking Ray calls, off the event loop and under a deadline.

Ray's driver API (ray.init, ray.get_actor, ray.nodes, ray.kill, ...) blocks,
and while the cluster's GCS is unreachable it blocks for as long as the GCS
stays away. So each call runs in a daemon thread (a stuck one must not keep
the loop or the process from ending), the caller stops waiting at its
deadline, and the number of threads is bounded: a stuck thread keeps its
slot until Ray lets go of it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from executors.base import ExecutorError

_T = TypeVar("_T")

# Blocking Ray calls one executor has running at once.
MAX_THREADS = 16


class BlockingCalls:
    """Runs blocking calls in daemon threads, at most MAX_THREADS at once.
    Belongs to one event loop."""

    def __init__(self) -> None:
        self._slots = asyncio.Semaphore(MAX_THREADS)

    async def run(
        self,
        function: Callable[..., _T],
        *args: Any,
        timeout_s: float,
        what: str,
        undo: Callable[[_T], None] | None = None,
    ) -> _T:
        """`function(*args)`; raises `ExecutorError` naming `what` when Ray
        has not answered within `timeout_s` seconds. A thread cannot be
        stopped: if the caller stops waiting (deadline, cancellation) and
        the call succeeds later, `undo(result)` runs in a thread."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._slots.acquire()
                return await self._start(function, args, undo)
        except TimeoutError:
            raise ExecutorError(
                f"Ray did not answer {what} within {timeout_s:g}s; is the cluster up? (ray status)"
            ) from None

    def _start(
        self,
        function: Callable[..., _T],
        args: tuple[Any, ...],
        undo: Callable[[_T], None] | None,
    ) -> asyncio.Future[_T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()

        def finish(error: BaseException | None, result: Any) -> None:
            # On the loop, so that it cannot race the waiter giving up.
            self._slots.release()
            if future.done():
                if error is None and undo is not None:
                    _in_thread(undo, result)
            elif error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

        def run() -> None:
            error, result = None, None
            try:
                result = function(*args)
            except BaseException as raised:
                error = raised
            try:
                loop.call_soon_threadsafe(finish, error, result)
            except RuntimeError:
                # The loop has closed: nobody waits any more.
                if error is None and undo is not None:
                    undo(result)

        _in_thread(run)
        return future


def _in_thread(function: Callable[..., Any], *args: Any) -> None:
    threading.Thread(target=function, args=args, daemon=True, name="capstan-ray-call").start()
