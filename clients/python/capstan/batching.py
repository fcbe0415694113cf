"""`serve.batch`: concurrent calls on one replica grouped into one list call.

The decorated function or method takes lists and returns (or yields) lists;
what `serve.batch` returns takes one item per call, queues it on a
`BatchQueue` (capstan.batch_queue) and answers with the caller's own result.
Its settings can change at run time, e.g. from `reconfigure`, through
`set_max_batch_size` / `set_batch_wait_timeout_s`. Only the standard library
is imported: this runs inside replicas.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

from capstan.batch_queue import (
    BatchQueue,
    BatchSettings,
    check_batch_wait_timeout_s,
    check_max_batch_size,
)


class _Batcher:
    """What one decorated handler shares: its settings, and a queue per
    instance (one for a function), made on first call on the running loop."""

    def __init__(self, handler: Callable[..., Any], settings: BatchSettings) -> None:
        self.handler = handler
        self.settings = settings
        self._queues: dict[int, tuple[Any, BatchQueue]] = {}

    def queue(self, instance: Any) -> BatchQueue:
        key = id(instance)
        entry = self._queues.get(key)
        if entry is None or not entry[1].is_usable():
            bound = self.handler if instance is None else self.handler.__get__(instance)
            # The instance is kept with its queue, so its id is never reused.
            entry = self._queues[key] = (
                instance,
                BatchQueue(bound, _name(self.handler), self.settings),
            )
        return entry[1]

    def __getstate__(self) -> dict[str, Any]:
        # Queues belong to the process and loop that made them; a pickled
        # deployment takes only the handler and its settings.
        return {"handler": self.handler, "settings": self.settings, "_queues": {}}

    def set_max_batch_size(self, new_max_batch_size: int) -> None:
        """Sets the largest batch for batches formed from now on."""
        check_max_batch_size(new_max_batch_size)
        self.settings.max_batch_size = new_max_batch_size

    def set_batch_wait_timeout_s(self, new_batch_wait_timeout_s: float) -> None:
        """Sets how long a batch waits to fill, for batches formed from now on."""
        check_batch_wait_timeout_s(new_batch_wait_timeout_s)
        self.settings.batch_wait_timeout_s = new_batch_wait_timeout_s

    def get_max_batch_size(self) -> int:
        return self.settings.max_batch_size

    def get_batch_wait_timeout_s(self) -> float:
        return self.settings.batch_wait_timeout_s


def _name(handler: Callable[..., Any]) -> str:
    return getattr(handler, "__qualname__", None) or repr(handler)


def batch(
    _func: Callable[..., Any] | None = None,
    /,
    max_batch_size: int = 10,
    batch_wait_timeout_s: float = 0.01,
    max_concurrent_batches: int = 1,
    batch_size_fn: Callable[[list[Any]], int] | None = None,
) -> Any:
    """Makes a function or method that takes lists into one called per item:
    `@serve.batch` or `@serve.batch(max_batch_size=..., batch_wait_timeout_s=...)`.

    Callers pass one item each (`await self.handle(x)`) and get their own
    result; the handler (sync or async, or a generator yielding lists to
    stream) is called with up to `max_batch_size` items at once, after at
    most `batch_wait_timeout_s` of waiting for the batch to fill, and at most
    `max_concurrent_batches` batches run at a time. `batch_size_fn`, given the
    calls' first arguments, measures a batch instead of `len` (e.g. in
    tokens). The returned function has `set_max_batch_size`,
    `set_batch_wait_timeout_s` and Ray Serve's `_get_max_batch_size` /
    `_get_batch_wait_timeout_s`."""
    if _func is not None and not callable(_func):
        raise TypeError("@serve.batch decorates a function or a method")
    settings = BatchSettings(
        max_batch_size, batch_wait_timeout_s, max_concurrent_batches, batch_size_fn
    )

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(func):
            raise TypeError(f"@serve.batch decorates a function or a method, not {func!r}")
        return _wrap(func, _Batcher(func, dataclasses.replace(settings)))

    return decorate(_func) if _func is not None else decorate


def _wrap(func: Callable[..., Any], batcher: _Batcher) -> Callable[..., Any]:
    def split(args: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...]]:
        # Called through an instance, the first argument is that instance.
        if args and getattr(type(args[0]), func.__name__, None) is wrapper:
            return args[0], args[1:]
        return None, args

    if inspect.isasyncgenfunction(func) or inspect.isgeneratorfunction(func):

        async def wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            instance, items = split(args)
            async for item in batcher.queue(instance).stream(items, kwargs):
                yield item

    else:

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            instance, items = split(args)
            return await batcher.queue(instance).call(items, kwargs)

    functools.update_wrapper(wrapper, func)
    wrapper.set_max_batch_size = batcher.set_max_batch_size  # type: ignore[attr-defined]
    wrapper.set_batch_wait_timeout_s = batcher.set_batch_wait_timeout_s  # type: ignore[attr-defined]
    wrapper._get_max_batch_size = batcher.get_max_batch_size  # type: ignore[attr-defined]
    wrapper._get_batch_wait_timeout_s = batcher.get_batch_wait_timeout_s  # type: ignore[attr-defined]
    return wrapper
