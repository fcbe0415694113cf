"""`serve.batch` on its own: the queue on a real event loop, no processes."""

from __future__ import annotations

import asyncio
import pickle
import threading
import time

import cloudpickle
import pytest

from capstan.batching import batch


class Recorder:
    """A handler class that records the batches it is called with."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    @batch(max_batch_size=4, batch_wait_timeout_s=0.05)
    async def double(self, items: list[int]) -> list[int]:
        self.sizes.append(len(items))
        return [item * 2 for item in items]

    @batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    def thread_id(self, items: list[int]) -> list[tuple[int, int]]:
        self.sizes.append(len(items))
        time.sleep(0.01)  # a sync handler runs in a thread, off the loop
        return [(item, threading.get_ident()) for item in items]

    @batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def __call__(self, items: list[str]) -> list[str]:
        self.sizes.append(len(items))
        return [item.upper() for item in items]


async def test_concurrent_calls_are_grouped_and_each_gets_its_own_result() -> None:
    recorder = Recorder()
    results = await asyncio.gather(*(recorder.double(i) for i in range(10)))
    assert results == [i * 2 for i in range(10)]
    assert recorder.sizes == [4, 4, 2]


async def test_a_lone_call_runs_after_the_wait_timeout() -> None:
    recorder = Recorder()
    started = time.monotonic()
    assert await recorder.double(21) == 42
    assert 0.04 <= time.monotonic() - started < 1
    assert recorder.sizes == [1]


async def test_sync_handlers_and_call_are_batched_too() -> None:
    recorder = Recorder()
    pairs = await asyncio.gather(*(recorder.thread_id(i) for i in range(6)))
    assert [item for item, _ in pairs] == list(range(6))
    assert {thread for _, thread in pairs} != {threading.get_ident()}
    assert await asyncio.gather(recorder("a"), recorder("b")) == ["A", "B"]
    assert recorder.sizes == [6, 2]


async def test_each_instance_batches_on_its_own() -> None:
    first, second = Recorder(), Recorder()
    await asyncio.gather(*(r.double(1) for r in (first, second, first, second)))
    assert first.sizes == [2] and second.sizes == [2]


async def test_functions_and_several_arguments_are_batched() -> None:
    seen: list[tuple[list[int], list[str]]] = []

    @batch
    async def label(numbers: list[int], *, names: list[str]) -> list[str]:
        seen.append((numbers, names))
        return [f"{name}={number}" for number, name in zip(numbers, names, strict=True)]

    results = await asyncio.gather(label(1, names="a"), label(2, names="b"))
    assert results == ["a=1", "b=2"]
    assert seen == [([1, 2], ["a", "b"])]


async def test_a_result_of_the_wrong_length_fails_every_caller_naming_the_handler() -> None:
    @batch(batch_wait_timeout_s=0.05)
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    results = await asyncio.gather(short(1), short(2), return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in results)
    assert "short returned 1 results for a batch of 2 calls" in str(results[0])

    @batch
    async def scalar(items: list[int]) -> int:
        return 3

    with pytest.raises(TypeError, match=r"scalar is a batch handler.*returned int"):
        await scalar(1)


async def test_an_exception_in_the_handler_fails_every_caller_in_the_batch() -> None:
    @batch(batch_wait_timeout_s=0.05)
    async def broken(items: list[int]) -> list[int]:
        raise KeyError("model missing")

    results = await asyncio.gather(broken(1), broken(2), return_exceptions=True)
    assert [type(r) for r in results] == [KeyError, KeyError]
    assert await asyncio.gather(broken(3), return_exceptions=True) != [3]  # still serving


async def test_mismatched_arguments_fail_the_batch_clearly() -> None:
    @batch(batch_wait_timeout_s=0.05)
    async def echo(items: list[int], extra: list[int] | None = None) -> list[int]:
        return items

    results = await asyncio.gather(echo(1), echo(2, 3), return_exceptions=True)
    assert all(isinstance(r, TypeError) for r in results)
    assert "must pass the same arguments" in str(results[0])


async def test_settings_change_at_run_time() -> None:
    recorder = Recorder()
    assert recorder.double._get_max_batch_size() == 4
    recorder.double.set_max_batch_size(2)
    recorder.double.set_batch_wait_timeout_s(0.02)
    try:
        assert recorder.double._get_batch_wait_timeout_s() == 0.02
        await asyncio.gather(*(recorder.double(i) for i in range(5)))
        assert recorder.sizes == [2, 2, 1]
    finally:
        recorder.double.set_max_batch_size(4)
        recorder.double.set_batch_wait_timeout_s(0.05)
    with pytest.raises(ValueError, match="max_batch_size must be at least 1, got 0"):
        recorder.double.set_max_batch_size(0)
    with pytest.raises(TypeError, match="batch_wait_timeout_s must be a number"):
        recorder.double.set_batch_wait_timeout_s("soon")


def test_bad_settings_are_refused_when_decorating() -> None:
    with pytest.raises(TypeError, match="max_batch_size must be an int, got float"):
        batch(max_batch_size=2.5)
    with pytest.raises(ValueError, match="max_concurrent_batches must be at least 1"):
        batch(max_concurrent_batches=0)


async def test_max_concurrent_batches_runs_batches_side_by_side() -> None:
    running, peak = 0, 0

    @batch(max_batch_size=1, max_concurrent_batches=3)
    async def slow(items: list[int]) -> list[int]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1
        return items

    assert await asyncio.gather(*(slow(i) for i in range(6))) == list(range(6))
    assert peak == 3


async def test_streaming_batches_give_each_caller_its_own_stream() -> None:
    @batch(max_batch_size=3, batch_wait_timeout_s=0.05)
    async def count(limits: list[int]):
        for step in range(max(limits)):
            yield [step if step < limit else StopIteration for limit in limits]

    async def collect(limit: int) -> list[int]:
        return [item async for item in count(limit)]

    assert await asyncio.gather(collect(1), collect(3), collect(2)) == [[0], [0, 1, 2], [0, 1]]


async def test_a_sync_streaming_batch_that_fails_ends_every_stream_with_the_error() -> None:
    @batch(batch_wait_timeout_s=0.05)
    def words(items: list[str]):
        yield [f"{item}-1" for item in items]
        raise RuntimeError("out of words")

    async def collect(item: str) -> list[str]:
        seen = []
        with pytest.raises(RuntimeError, match="out of words"):
            async for word in words(item):
                seen.append(word)
        return seen

    assert await asyncio.gather(collect("a"), collect("b")) == [["a-1"], ["b-1"]]


async def test_a_cancelled_caller_is_left_out_of_the_batch() -> None:
    recorder = Recorder()
    gone = asyncio.ensure_future(recorder.double(1))
    await asyncio.sleep(0)
    gone.cancel()
    assert await recorder.double(2) == 4
    assert recorder.sizes == [1]


async def test_a_pickled_handler_takes_its_settings_but_not_its_queues() -> None:
    class Local:  # defined here, so cloudpickle ships it by value
        @batch(max_batch_size=3)
        async def double(self, items: list[int]) -> list[int]:
            return [item * 2 for item in items]

    assert await Local().double(1) == 2  # makes a queue, which must not travel
    data = cloudpickle.dumps(Local)  # would fail on the queue's asyncio objects
    assert b"BatchQueue" not in data
    copy = pickle.loads(data)
    assert copy.double._get_max_batch_size() == 3
    assert await asyncio.gather(copy().double(1), copy().double(2)) == [2, 4]


async def test_batch_size_fn_measures_batches_and_refuses_calls_too_large_for_any() -> None:
    seen: list[list[str]] = []

    @batch(
        max_batch_size=10,
        batch_wait_timeout_s=0.05,
        batch_size_fn=lambda texts: sum(map(len, texts)),
    )
    async def tokens(texts: list[str]) -> list[int]:
        seen.append(texts)
        return [len(text) for text in texts]

    calls = [tokens("aaaa"), tokens("bbbb"), tokens("x" * 11), tokens("cccc"), tokens("ddd")]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert results[:2] == [4, 4] and results[3:] == [4, 3]
    assert isinstance(results[2], ValueError)
    assert "has size 11, more than max_batch_size 10" in str(results[2])
    assert seen == [["aaaa", "bbbb"], ["cccc", "ddd"]]
