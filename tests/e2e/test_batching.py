"""`@serve.batch` through a real Capstan: concurrent HTTP requests and handle
calls to one replica are grouped, each caller gets its own answer, batches
stream, and the batch size follows `user_config` at run time."""

from __future__ import annotations

import asyncio
import threading

import httpx

from tests.support.cluster import Cluster


def test_concurrent_http_requests_are_batched(serve, cluster: Cluster) -> None:
    @serve.deployment
    class Uppercase:
        @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.2)
        async def __call__(self, requests):
            words = [request.query_params["word"] for request in requests]
            return [{"word": word.upper(), "batch": len(words)} for word in words]

    serve.run(Uppercase.bind(), route_prefix="/upper")

    async def send_all() -> list[dict]:
        async with httpx.AsyncClient(base_url=cluster.http_url, timeout=30) as http:
            replies = await asyncio.gather(
                *(http.get("/upper", params={"word": f"w{i}"}) for i in range(16))
            )
        assert all(reply.status_code == 200 for reply in replies), replies
        return [reply.json() for reply in replies]

    answers = asyncio.run(send_all())
    assert [a["word"] for a in answers] == [f"W{i}" for i in range(16)]
    assert max(a["batch"] for a in answers) > 1


def test_concurrent_handle_calls_to_a_sync_method_are_batched(serve) -> None:
    @serve.deployment
    class Squarer:
        def __init__(self):
            self.sizes = []
            self.threads = set()

        @serve.batch(max_batch_size=10, batch_wait_timeout_s=0.2)
        def square(self, numbers):
            self.sizes.append(len(numbers))
            self.threads.add(threading.get_ident())
            return [n * n for n in numbers]

        def report(self):
            return self.sizes, threading.get_ident() in self.threads

    handle = serve.run(Squarer.bind(), route_prefix=None)
    responses = [handle.square.remote(n) for n in range(20)]
    assert [r.result(timeout_s=30) for r in responses] == [n * n for n in range(20)]
    sizes, ran_on_the_loop = handle.report.remote().result(timeout_s=30)
    assert sum(sizes) == 20 and max(sizes) > 1
    assert not ran_on_the_loop  # the sync handler ran in a thread


def test_an_exception_or_a_wrong_length_fails_every_caller_of_the_batch(serve) -> None:
    @serve.deployment
    class Faulty:
        @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.2)
        async def __call__(self, items):
            if "boom" in items:
                raise ValueError("boom in the batch")
            return items[:-1]

    handle = serve.run(Faulty.bind(), route_prefix=None)
    errors = [_error_of(r) for r in [handle.remote("boom"), handle.remote("fine")]]
    assert all("boom in the batch" in e for e in errors), errors
    errors = [_error_of(r) for r in [handle.remote("a"), handle.remote("b")]]
    assert all("Faulty.__call__ returned" in e and "one result per call" in e for e in errors)


def _error_of(response) -> str:
    try:
        response.result(timeout_s=30)
    except Exception as error:
        return str(error)
    raise AssertionError("the call should have failed")


async def test_a_streaming_batch_gives_each_caller_its_own_stream(serve) -> None:
    @serve.deployment
    class Counter:
        @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.2)
        async def count(self, limits):
            for step in range(max(limits)):
                yield [(step, len(limits)) if step < limit else StopIteration for limit in limits]

    handle = serve.run(Counter.bind(), route_prefix=None)
    streaming = handle.options(method_name="count", stream=True)

    async def collect(limit: int) -> list[tuple[int, int]]:
        return [tuple(item) async for item in streaming.remote(limit)]

    streams = await asyncio.gather(*(collect(limit) for limit in (2, 4, 3)))
    assert [[step for step, _ in stream] for stream in streams] == [[0, 1], [0, 1, 2, 3], [0, 1, 2]]
    assert max(size for stream in streams for _, size in stream) > 1


def test_reconfigure_changes_the_batch_size(serve) -> None:
    @serve.deployment(user_config={"max_batch_size": 2})
    class Tunable:
        def __init__(self):
            self.sizes = []

        def reconfigure(self, config):
            self.handle.set_max_batch_size(config["max_batch_size"])
            self.handle.set_batch_wait_timeout_s(0.2)

        @serve.batch(max_batch_size=10)
        async def handle(self, items):
            self.sizes.append(len(items))
            return items

        def report(self):
            return self.sizes, self.handle._get_max_batch_size()

    handle = serve.run(Tunable.bind(), route_prefix=None)
    assert [r.result(timeout_s=30) for r in [handle.handle.remote(i) for i in range(8)]] == list(
        range(8)
    )
    sizes, max_batch_size = handle.report.remote().result(timeout_s=30)
    assert max_batch_size == 2
    assert max(sizes) == 2


def test_a_streaming_batch_streams_over_http(serve, cluster: Cluster) -> None:
    from starlette.responses import StreamingResponse

    @serve.deployment
    class Numbers:
        @serve.batch(max_batch_size=5, batch_wait_timeout_s=0.2)
        async def numbers(self, limits):
            for i in range(max(limits)):
                yield [f"{i}/{len(limits)}\n" if i < limit else StopIteration for limit in limits]

        async def __call__(self, request):
            limit = int(request.query_params["max"])
            return StreamingResponse(self.numbers(limit), media_type="text/plain")

    serve.run(Numbers.bind(), route_prefix="/numbers")

    async def fetch(http: httpx.AsyncClient, limit: int) -> list[str]:
        reply = await http.get("/numbers", params={"max": limit})
        assert reply.status_code == 200
        return reply.text.splitlines()

    async def fetch_all() -> list[list[str]]:
        async with httpx.AsyncClient(base_url=cluster.http_url, timeout=30) as http:
            return await asyncio.gather(*(fetch(http, limit) for limit in (1, 3, 2)))

    bodies = asyncio.run(fetch_all())
    assert [[line.split("/")[0] for line in body] for body in bodies] == [
        ["0"],
        ["0", "1", "2"],
        ["0", "1"],
    ]
    assert max(int(line.split("/")[1]) for body in bodies for line in body) > 1
