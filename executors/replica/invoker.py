"""Calling user code without blocking the event loop.

Coroutine and async-generator functions run on the loop; everything else
runs on a thread pool sized by `max_concurrent_queries`, so a slow sync
method holds a thread, never the loop. Generators, sync or async, are
consumed item by item so results stream as they are produced.

A thread cannot be interrupted: a call cancelled while its thread runs
stays in flight until the thread returns (and is only then answered and
counted out), so the replica never admits more sync calls than it has
threads and never reports less load than it carries. Hooks (check_health,
reconfigure) have threads of their own, so a pool full of hung calls does
not make a replica that still answers look dead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import dataclasses
import functools
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

from capstan.errors import InvalidSpec

_EXHAUSTED = object()
# Threads for hooks: check_health and reconfigure may run at once.
_HOOK_THREADS = 2


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """A user callable, classified once so each call skips `inspect`."""

    # "Class.method" or the function name, for messages.
    name: str
    fn: Callable[..., Any]
    is_coroutine: bool
    is_async_generator: bool
    # Takes exactly one required positional argument: an HTTP-style handler.
    wants_request: bool = False
    # None when Python cannot tell (some builtins).
    signature: inspect.Signature | None = None

    @classmethod
    def of(cls, name: str, fn: Callable[..., Any]) -> Target:
        # An instance with an async __call__ is not itself a coroutine function.
        call = getattr(fn, "__call__", None)  # noqa: B004
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError):
            signature = None
        return cls(
            name,
            fn,
            inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call),
            inspect.isasyncgenfunction(fn) or inspect.isasyncgenfunction(call),
            signature is not None and _takes_one_argument(signature),
            signature,
        )

    def check_arguments(self, args: Any, kwargs: dict[str, Any]) -> None:
        """Raises `InvalidSpec` (field `arguments`) when the arguments do
        not fit the signature, so a caller learns it sent the wrong ones
        rather than that the user's code raised a TypeError."""
        if self.signature is None:
            return
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as error:
            raise InvalidSpec(
                f"arguments do not fit {self.name}{self.signature}: {error}", "arguments"
            ) from None


def _takes_one_argument(signature: inspect.Signature) -> bool:
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    parameters = signature.parameters.values()
    required = [p for p in parameters if p.kind in positional and p.default is p.empty]
    return len(required) == 1


def is_stream(value: Any) -> bool:
    """Whether a call's result is a generator to stream item by item."""
    return inspect.isgenerator(value) or inspect.isasyncgen(value)


class Invoker:
    """Runs targets: on the loop or on the thread pool, as they need."""

    def __init__(self, max_threads: int) -> None:
        self._pool = _new_pool(max_threads)
        self._hooks = _new_pool(_HOOK_THREADS, "capstan-hook")

    async def call(self, target: Target, args: Any, kwargs: dict[str, Any]) -> Any:
        """The target's return value. An async generator function's result is
        the generator itself, not yet started."""
        if target.is_coroutine:
            return await target.fn(*args, **kwargs)
        if target.is_async_generator:
            return target.fn(*args, **kwargs)
        call = functools.partial(target.fn, *args, **kwargs) if kwargs else target.fn
        # The request's context (its multiplexed model id) goes with it to the thread.
        run = contextvars.copy_context().run
        result = await _in_thread(self._pool, run, call, *(() if kwargs else args))
        if inspect.isawaitable(result):
            # A sync function that hands back a coroutine (a decorator's doing).
            result = await result
        return result

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Calls a hook such as `reconfigure` or `check_health`, sync or async."""
        if inspect.iscoroutinefunction(fn):
            return await fn(*args)
        result = await asyncio.get_running_loop().run_in_executor(self._hooks, fn, *args)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def items(self, stream: Any) -> AsyncIterator[Any]:
        """The items of a sync or async generator, as they come."""
        if inspect.isasyncgen(stream):
            async for item in stream:
                yield item
            return
        while True:
            item = await _in_thread(self._pool, next, stream, _EXHAUSTED)
            if item is _EXHAUSTED:
                return
            yield item

    def resize(self, max_threads: int) -> None:
        """Swaps in a pool of the new size; work already queued on the old
        one still runs there."""
        old, self._pool = self._pool, _new_pool(max_threads)
        old.shutdown(wait=False)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._hooks.shutdown(wait=False, cancel_futures=True)


async def _in_thread(
    pool: concurrent.futures.ThreadPoolExecutor, fn: Callable[..., Any], *args: Any
) -> Any:
    """`fn(*args)` on the pool. Cancelled while it runs, it still waits for
    the thread to return before passing the cancellation on."""
    future = pool.submit(fn, *args)
    try:
        return await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        if not future.cancel():  # already running
            await asyncio.wait([asyncio.wrap_future(future)])
        raise


def _new_pool(
    max_threads: int, prefix: str = "capstan-user"
) -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(max_threads, thread_name_prefix=prefix)
