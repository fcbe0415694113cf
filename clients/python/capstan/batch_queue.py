"""The queue behind `serve.batch` (capstan.batching): calls in, batches out.

Each call puts its arguments on a `BatchQueue` and waits. The queue's task
takes up to `max_batch_size` calls (or as many as `batch_size_fn` says fit),
waiting at most `batch_wait_timeout_s` after the first for more, and calls
the handler once with a list per argument; the i-th result goes back to the
i-th caller. A handler that is a generator yields one list per step and each
caller gets a stream of its own elements (`StopIteration` in a caller's slot
ends its stream early), as Ray Serve's does.

The queue lives on the event loop, so calls group even when the handler is
sync (the replica would run a sync method in a thread, one call each); a
sync handler runs in a thread so that a batch does not stall the loop. It
runs inside replicas, so it imports only the standard library.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

# A caller's stream is over: the handler finished, or put StopIteration in its slot.
_END = object()
_STREAM_ENDS = (StopIteration, StopAsyncIteration)


@dataclasses.dataclass
class BatchSettings:
    """The settings of one decorated handler; mutable at run time through the
    wrapper's `set_max_batch_size` / `set_batch_wait_timeout_s`."""

    max_batch_size: int = 10
    batch_wait_timeout_s: float = 0.01
    max_concurrent_batches: int = 1
    # The size of a batch from its calls' first arguments; len() when None.
    batch_size_fn: Callable[[list[Any]], int] | None = None

    def __post_init__(self) -> None:
        check_max_batch_size(self.max_batch_size)
        check_batch_wait_timeout_s(self.batch_wait_timeout_s)
        _check_positive_int("max_concurrent_batches", self.max_concurrent_batches)
        if self.batch_size_fn is not None and not callable(self.batch_size_fn):
            raise TypeError(
                f"batch_size_fn must be callable, got {type(self.batch_size_fn).__name__}"
            )


def check_max_batch_size(value: Any) -> None:
    """Raises `TypeError` / `ValueError` unless `value` is an int of at least 1."""
    _check_positive_int("max_batch_size", value)


def check_batch_wait_timeout_s(value: Any) -> None:
    """Raises `TypeError` / `ValueError` unless `value` is a number of at least 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"batch_wait_timeout_s must be a number, got {type(value).__name__}")
    if not value >= 0:
        raise ValueError(f"batch_wait_timeout_s must be at least 0, got {value}")


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Call:
    """One caller's arguments and where its answer goes: a future for a plain
    handler, a queue of items (ended by `_END` or an exception) for a stream."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    reply: asyncio.Future[Any] | asyncio.Queue[Any]


class BatchQueue:
    """Collects calls for `handler` on the running loop and runs them in batches.

    `handler` takes a list per argument of the calls (with `self` already
    bound for a method) and returns, or yields, a list with one result per call."""

    def __init__(self, handler: Callable[..., Any], name: str, settings: BatchSettings) -> None:
        self.name = name
        self.settings = settings
        self._handler = handler
        self._is_stream = inspect.isasyncgenfunction(handler) or inspect.isgeneratorfunction(
            handler
        )
        self._pending: asyncio.Queue[Call] = asyncio.Queue()
        # A call that did not fit the last batch: it starts the next one.
        self._held: Call | None = None
        self._loop = asyncio.get_running_loop()
        self._slots = asyncio.Semaphore(settings.max_concurrent_batches)
        self._batches: set[asyncio.Task[None]] = set()
        self._task = self._loop.create_task(self._run(), name=f"serve.batch {name}")

    def is_usable(self) -> bool:
        """False once the loop it runs on is gone (a new loop needs a new queue)."""
        return not self._loop.is_closed() and self._loop is asyncio.get_running_loop()

    async def call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Queues one call and returns its own result; raises what the batch raised."""
        future = self._loop.create_future()
        self._pending.put_nowait(Call(args, kwargs, future))
        return await future

    async def stream(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        """Queues one call and yields its own elements of each step of the batch."""
        items: asyncio.Queue[Any] = asyncio.Queue()
        self._pending.put_nowait(Call(args, kwargs, items))
        while (item := await items.get()) is not _END:
            if isinstance(item, _Failure):
                raise item.error
            yield item

    async def _run(self) -> None:
        while True:
            # The slot is taken before the batch forms: calls that arrive while
            # every slot is busy fill the next batch, rather than queueing up
            # behind it in small batches of their own.
            await self._slots.acquire()
            try:
                batch = await self._next_batch()
            except BaseException:
                self._slots.release()
                raise
            task = self._loop.create_task(self._process(batch))
            self._batches.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._batches.discard(task)
        self._slots.release()

    async def _next_batch(self) -> list[Call]:
        """The next calls to run: as many as fit in max_batch_size, waiting at
        most batch_wait_timeout_s after the first for the rest."""
        limit = self.settings.max_batch_size
        batch: list[Call] = []
        size, deadline = 0, None
        while size < limit:
            call = await self._take(None if deadline is None else deadline - self._loop.time())
            if call is None:
                break
            new_size = self._size_with(batch, call)
            if new_size is None:
                continue
            if new_size > limit:
                self._held = call  # it starts the next batch
                break
            batch.append(call)
            size = new_size
            if deadline is None:
                deadline = self._loop.time() + self.settings.batch_wait_timeout_s
        return batch

    async def _take(self, timeout_s: float | None) -> Call | None:
        """The held call, else the next queued one; None after `timeout_s`."""
        if self._held is not None:
            call, self._held = self._held, None
            return call
        if not self._pending.empty():
            return self._pending.get_nowait()
        if timeout_s is not None and timeout_s <= 0:
            return None
        try:
            async with asyncio.timeout(timeout_s):
                return await self._pending.get()
        except TimeoutError:
            return None

    def _size_with(self, batch: list[Call], call: Call) -> int | None:
        """The size of `batch` with `call` added; None, with the call failed,
        when it cannot be sized or is too large for any batch."""
        try:
            size = self._size([*batch, call])
        except Exception as error:
            _fail(call, error)
            return None
        if not batch and size > self.settings.max_batch_size:
            _fail(
                call,
                ValueError(
                    f"a call to {self.name} has size {size}, more than max_batch_size "
                    f"{self.settings.max_batch_size}: raise it or check batch_size_fn"
                ),
            )
            return None
        return size

    def _size(self, batch: list[Call]) -> int:
        size_fn = self.settings.batch_size_fn
        return len(batch) if size_fn is None else size_fn([call.args[0] for call in batch])

    async def _process(self, batch: list[Call]) -> None:
        # A caller that gave up before the batch ran is left out of it.
        batch = [c for c in batch if not (isinstance(c.reply, asyncio.Future) and c.reply.done())]
        if not batch:
            return
        try:
            args, kwargs = self._arguments(batch)
            if self._is_stream:
                await self._deliver_stream(batch, args, kwargs)
            else:
                results = await self._invoke(args, kwargs)
                for call, result in zip(batch, self._checked(results, len(batch)), strict=True):
                    _answer(call, result)
        except Exception as error:
            for call in batch:
                _fail(call, error)

    def _arguments(self, batch: list[Call]) -> tuple[list[list[Any]], dict[str, list[Any]]]:
        """A list per positional and per keyword argument, across the batch."""
        shape = (len(batch[0].args), sorted(batch[0].kwargs))
        for call in batch:
            if (len(call.args), sorted(call.kwargs)) != shape:
                raise TypeError(
                    f"calls batched by {self.name} must pass the same arguments: one passed "
                    f"{len(call.args)} positional and {sorted(call.kwargs)}, another "
                    f"{shape[0]} positional and {shape[1]}"
                )
        args = [[call.args[i] for call in batch] for i in range(shape[0])]
        kwargs = {key: [call.kwargs[key] for call in batch] for key in shape[1]}
        return args, kwargs

    async def _invoke(self, args: list[list[Any]], kwargs: dict[str, list[Any]]) -> Any:
        if inspect.iscoroutinefunction(self._handler):
            return await self._handler(*args, **kwargs)
        result = await asyncio.to_thread(functools.partial(self._handler, *args, **kwargs))
        return await result if inspect.isawaitable(result) else result

    async def _deliver_stream(
        self, batch: list[Call], args: list[list[Any]], kwargs: dict[str, list[Any]]
    ) -> None:
        open_calls = list(batch)
        async for step in _steps(self._handler(*args, **kwargs)):
            for call, item in zip(batch, self._checked(step, len(batch)), strict=True):
                if call not in open_calls:
                    continue
                if any(item is end for end in _STREAM_ENDS):
                    open_calls.remove(call)
                    _answer(call, _END)
                else:
                    _answer(call, item)
        for call in open_calls:
            _answer(call, _END)

    def _checked(self, results: Any, expected: int) -> list[Any]:
        if isinstance(results, str | bytes) or not hasattr(results, "__len__"):
            raise TypeError(
                f"{self.name} is a batch handler, so it must return a list with one result "
                f"per call; it returned {type(results).__name__}"
            )
        if len(results) != expected:
            raise ValueError(
                f"{self.name} returned {len(results)} results for a batch of {expected} "
                "calls; a batch handler must return one result per call, in order"
            )
        return list(results)


@dataclasses.dataclass(frozen=True, slots=True)
class _Failure:
    error: BaseException


def _answer(call: Call, value: Any) -> None:
    if isinstance(call.reply, asyncio.Queue):
        call.reply.put_nowait(value)
    elif not call.reply.done():
        call.reply.set_result(value)


def _fail(call: Call, error: BaseException) -> None:
    if isinstance(call.reply, asyncio.Queue):
        call.reply.put_nowait(_Failure(error))
    elif not call.reply.done():
        call.reply.set_exception(error)


async def _steps(generator: Any) -> AsyncIterator[Any]:
    """The steps of a sync or async generator; a sync one advances in a thread."""
    if inspect.isasyncgen(generator):
        async for step in generator:
            yield step
        return
    while (step := await asyncio.to_thread(next, generator, _END)) is not _END:
        yield step
