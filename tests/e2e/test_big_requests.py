"""Issue 8, finding 3: bodies up to the proxy's limit stream through the
shared replica stream in chunks, beside small requests that must not notice,
and the proxy gives its memory back afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import threading
from collections.abc import Iterator

import httpx
import psutil
import pytest

import capstan
from tests.support.cluster import Cluster
from tests.support.waiting import eventually_sync

MIB = 1 << 20


def _deploy_sink(serve) -> None:
    @serve.deployment(name="sink", max_concurrent_queries=200)
    class Sink:
        async def __call__(self, request):
            if request.method == "GET":
                size = int(request.query_params.get("size", "0"))
                return b"x" * size if size else "small"
            digest, length = hashlib.sha256(), 0
            async for chunk in request.stream():  # never the whole body at once
                digest.update(chunk)
                length += len(chunk)
            return {"length": length, "sha256": digest.hexdigest()}

    Sink.deploy()


def _body(size: int, seed: int) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest() * (MIB // 32)
    return (block * (size // len(block) + 1))[:size]


async def _upload(http: httpx.AsyncClient, url: str, body: bytes) -> dict:
    response = await http.post(url, content=body)
    assert response.status_code == 200, response.text
    return json.loads(response.text)


async def _small_requests(http: httpx.AsyncClient, url: str, stop: asyncio.Event) -> list:
    outcomes = []
    while not stop.is_set() and len(outcomes) < 20_000:
        try:
            response = await http.get(url)
            outcomes.append(response.status_code if response.text != "small" else "ok")
        except httpx.HTTPError as error:
            outcomes.append(repr(error))
    return outcomes


async def _uploads_beside_small(url: str, bodies: list[bytes]) -> tuple[list[dict], list]:
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        stop = asyncio.Event()
        small = [asyncio.create_task(_small_requests(http, url, stop)) for _ in range(8)]
        try:
            results = await asyncio.gather(*(_upload(http, url, body) for body in bodies))
        finally:
            stop.set()
        outcomes = [o for task in small for o in await task]
    return results, outcomes


def _proxy(cluster: Cluster) -> psutil.Process:
    return psutil.Process(json.loads((cluster.state_dir / "proxy.json").read_text())["pid"])


@contextlib.contextmanager
def _peak_rss(process: psutil.Process) -> Iterator[list[int]]:
    """Samples `process`'s RSS every 10 ms meanwhile; the list holds the peak."""
    peak = [process.memory_info().rss]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.01):
            peak[0] = max(peak[0], process.memory_info().rss)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        yield peak
    finally:
        stop.set()
        sampler.join(timeout=5)


def test_64_mib_upload_beside_small_requests(serve, cluster: Cluster) -> None:
    _deploy_sink(serve)
    url = cluster.http_url + "/sink"
    body = _body(64 * MIB, 1)  # the proxy's own limit
    results, outcomes = asyncio.run(_uploads_beside_small(url, [body]))
    assert results == [{"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}]
    failures = [o for o in outcomes if o != "ok"]
    assert outcomes and not failures, f"{len(failures)} of {len(outcomes)} failed: {failures[:5]}"


def test_four_concurrent_40_mib_bodies_and_memory_returns(serve, cluster: Cluster) -> None:
    _deploy_sink(serve)
    url = cluster.http_url + "/sink"
    assert httpx.get(url).text == "small"
    proxy = _proxy(cluster)
    baseline = proxy.memory_info().rss
    bodies = [_body(40 * MIB, seed) for seed in range(4)]
    with _peak_rss(proxy) as peak:
        results, outcomes = asyncio.run(_uploads_beside_small(url, bodies))
    expected = [{"length": len(b), "sha256": hashlib.sha256(b).hexdigest()} for b in bodies]
    assert results == expected
    assert outcomes and all(o == "ok" for o in outcomes), outcomes[:5]
    # Never a whole body held: 160 MiB went through at once, the proxy grew
    # by a few chunks per upload, and gave even that back.
    assert peak[0] - baseline < 48 * MIB, f"peak {(peak[0] - baseline) / MIB:.0f} MiB"
    eventually_sync(
        lambda: proxy.memory_info().rss - baseline < 24 * MIB,
        f"proxy RSS near its baseline of {baseline / MIB:.0f} MiB",
        timeout_s=10,
    )


def test_big_response_streams_back(serve, cluster: Cluster) -> None:
    _deploy_sink(serve)
    response = httpx.get(cluster.http_url + "/sink", params={"size": 70 * MIB}, timeout=60)
    assert response.status_code == 200
    assert len(response.content) == 70 * MIB


def test_body_over_the_limit_is_413_and_the_stream_lives(serve, cluster: Cluster) -> None:
    _deploy_sink(serve)
    url = cluster.http_url + "/sink"
    response = httpx.post(url, content=_body(64 * MIB + 1, 2), timeout=60)
    assert response.status_code == 413
    assert httpx.get(url).text == "small"


def test_a_message_too_big_for_the_stream_fails_alone(serve) -> None:
    @serve.deployment(name="blob", max_concurrent_queries=4)
    class Blob:
        def size(self, data: bytes) -> int:
            return len(data)

        def make(self, size: int) -> bytes:
            return b"y" * size

    Blob.deploy()
    handle = Blob.get_handle()
    small = [handle.size.remote(b"abc") for _ in range(20)]
    with pytest.raises(capstan.BackPressure, match=r"over the .*-byte limit"):
        handle.size.remote(b"x" * 70 * MIB).result(timeout_s=60)
    with pytest.raises(capstan.BackPressure, match=r"the response is .* bytes"):
        handle.make.remote(70 * MIB).result(timeout_s=60)
    assert [r.result(timeout_s=60) for r in small] == [3] * 20
    # Neither took a slot for good: all four still serve at once.
    assert [r.result(timeout_s=60) for r in [handle.size.remote(b"ab") for _ in range(8)]] == [
        2
    ] * 8
