"""The HTTP proxy end to end: httpx → uvicorn → Router → Exchange stream →
real (hand-written) replica servers, with routes from a real WatchRoutes stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from capstan.v1 import controlplane_pb2
from proxy.server import ProxyServer
from tests.proxy_support.fake_control_plane import endpoint
from tests.proxy_support.harness import FakeCluster, fake_cluster, proxy, sync_routes
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(30)


@dataclass
class Edge:
    """A proxy in front of a fake control plane, and an HTTP client for it."""

    cluster: FakeCluster
    server: ProxyServer
    http: httpx.AsyncClient

    async def publish(self, *endpoints: controlplane_pb2.Endpoint) -> None:
        await sync_routes(self.server, self.cluster.publish(*endpoints))


@pytest.fixture
async def edge() -> AsyncIterator[Edge]:
    async with fake_cluster() as running, proxy(running, no_replica_timeout_s=0.2) as server:
        base_url = f"http://127.0.0.1:{server.http_port}"
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
            yield Edge(running, server, http)


async def test_healthz_and_routes(edge: Edge) -> None:
    _, address = await edge.cluster.replica("a")
    await edge.publish(endpoint("api", "/api", [("a", address)]), endpoint("grpc-only", "", []))
    health = await edge.http.get("/-/healthz")
    assert (health.status_code, health.text) == (200, "success")
    routes = await edge.http.get("/-/routes")
    assert routes.status_code == 200
    assert routes.json() == {"/api": "api"}


async def test_unmatched_path_is_404_pointing_at_routes(edge: Edge) -> None:
    _, address = await edge.cluster.replica("a")
    await edge.publish(endpoint("api", "/api", [("a", address)]))
    for path in ("/", "/apix", "/other/api"):
        response = await edge.http.get(path)
        assert response.status_code == 404
        assert "/-/routes" in response.text


async def test_longest_prefix_on_whole_segments(edge: Edge) -> None:
    replicas = {name: (await edge.cluster.replica(name))[1] for name in ("root", "api", "v2")}
    await edge.publish(
        endpoint("root", "/", [("root", replicas["root"])]),
        endpoint("api", "/api", [("api", replicas["api"])]),
        endpoint("v2", "/api/v2", [("v2", replicas["v2"])]),
    )
    cases = [
        ("/", "root", ""),
        ("/apix", "root", ""),
        ("/api", "api", "/api"),
        ("/api/", "api", "/api"),
        ("/api/x?q=1", "api", "/api"),
        ("/api/v2/items", "v2", "/api/v2"),
        ("/api/v20", "api", "/api"),
    ]
    for path, replica, root_path in cases:
        seen = (await edge.http.get(path)).json()
        assert (seen["replica"], seen["root_path"]) == (replica, root_path), path
    seen = (await edge.http.post("/api/x?q=1", content=b"hello")).json()
    assert seen["method"] == "POST" and seen["path"] == "/api/x" and seen["query"] == "q=1"
    assert seen["body_len"] == 5 and seen["client_host"] == "127.0.0.1"
    assert seen["http_version"] == "1.1" and seen["headers"]["content-length"] == "5"


async def test_least_loaded_spreads_load_over_two_replicas(edge: Edge) -> None:
    a, address_a = await edge.cluster.replica("a")
    b, address_b = await edge.cluster.replica("b")
    await edge.publish(endpoint("d", "/d", [("a", address_a), ("b", address_b)]))
    responses = await asyncio.gather(*(edge.http.get("/d/sleep?s=0.3") for _ in range(20)))
    assert all(r.status_code == 200 for r in responses)
    assert a.started + b.started == 20
    assert 8 <= a.max_seen <= 12 and 8 <= b.max_seen <= 12


async def test_max_concurrent_queries_is_never_exceeded(edge: Edge) -> None:
    replicas = [await edge.cluster.replica(name) for name in ("a", "b")]
    table = endpoint("d", "/d", [(r.name, address) for r, address in replicas])
    table.max_concurrent_queries = 1
    await edge.publish(table)
    responses = await asyncio.gather(*(edge.http.get("/d/sleep?s=0.02") for _ in range(30)))
    assert [r.status_code for r in responses] == [200] * 30
    assert [r.max_seen for r, _ in replicas] == [1, 1]
    assert sum(r.rejected for r, _ in replicas) == 0


async def test_full_queue_answers_503(edge: Edge) -> None:
    a, address = await edge.cluster.replica("a")
    await edge.publish(
        endpoint("d", "/d", [("a", address)], max_concurrent_queries=1, max_queued_requests=1)
    )
    responses = await asyncio.gather(*(edge.http.get("/d/sleep?s=0.5") for _ in range(4)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 200, 503, 503]
    assert "at capacity" in next(r.text for r in responses if r.status_code == 503)
    assert a.max_seen == 1


async def test_rejected_requests_are_retried_on_another_replica(edge: Edge) -> None:
    a, address_a = await edge.cluster.replica("a")
    _b, address_b = await edge.cluster.replica("b")
    a.reject_all = True
    await edge.publish(endpoint("d", "/d", [("a", address_a), ("b", address_b)]))
    for _ in range(20):
        response = await edge.http.get("/d/x")
        assert response.status_code == 200 and response.json()["replica"] == "b"
    assert a.rejected > 0 and a.started == 0


async def test_no_replica_is_503(edge: Edge) -> None:
    await edge.publish(endpoint("d", "/d", []))
    response = await edge.http.get("/d/x")
    assert response.status_code == 503
    assert "no live replica for deployment 'd'" in response.text


async def test_streamed_response_arrives_in_parts(edge: Edge) -> None:
    _, address = await edge.cluster.replica("a")
    await edge.publish(endpoint("d", "/d", [("a", address)]))
    async with edge.http.stream("GET", "/d/stream?n=3&gap=0.05") as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/plain"
        chunks = [chunk async for chunk in response.aiter_raw()]
    assert b"".join(chunks) == b"part0;part1;part2;"
    assert len(chunks) == 3


async def test_user_errors_are_500_without_traceback(edge: Edge) -> None:
    _, address = await edge.cluster.replica("a")
    await edge.publish(endpoint("d", "/d", [("a", address)]))
    response = await edge.http.get("/d/fail")
    assert response.status_code == 500
    assert "ValueError" in response.text
    assert "Traceback" not in response.text and "secret" not in response.text


async def test_client_disconnect_cancels_the_request_on_the_replica(edge: Edge) -> None:
    a, address = await edge.cluster.replica("a")
    await edge.publish(endpoint("d", "/d", [("a", address)]))
    request = asyncio.create_task(edge.http.get("/d/sleep?s=20"))
    await a.wait_for(lambda: a.ongoing == 1)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    await a.wait_for(lambda: a.cancelled == 1 and a.ongoing == 0)
    await eventually(
        lambda: edge.server.router.snapshot()["d"] == [(address, 0)],
        "the router to see the cancelled request finish",
    )


async def test_keeps_serving_the_last_table_without_a_control_plane(edge: Edge) -> None:
    _, address = await edge.cluster.replica("a")
    await edge.publish(endpoint("d", "/d", [("a", address)]))
    await edge.cluster.stop_control_plane()
    await eventually(lambda: not edge.server.watcher.is_connected, "the watcher to disconnect")
    for _ in range(5):
        assert (await edge.http.get("/d/x")).status_code == 200
    assert (await edge.http.get("/-/routes")).json() == {"/d": "d"}


async def test_table_updates_do_not_fail_requests_in_flight(edge: Edge) -> None:
    a, address_a = await edge.cluster.replica("a")
    _b, address_b = await edge.cluster.replica("b")
    await edge.publish(endpoint("d", "/d", [("a", address_a)]))
    slow = [asyncio.create_task(edge.http.get("/d/sleep?s=0.5")) for _ in range(3)]
    await a.wait_for(lambda: a.ongoing == 3)
    await edge.publish(endpoint("d", "/d", [("b", address_b)]))
    fast = [(await edge.http.get("/d/x")).json()["replica"] for _ in range(3)]
    assert fast == ["b", "b", "b"]
    assert [r.status_code for r in await asyncio.gather(*slow)] == [200, 200, 200]
    await edge.publish(endpoint("d", "/d", [("a", address_a), ("b", address_b)]))
    seen = {(await edge.http.get("/d/x")).json()["replica"] for _ in range(30)}
    assert seen == {"a", "b"}


async def test_a_replica_that_dies_fails_its_requests_and_is_avoided(edge: Edge) -> None:
    a, address_a = await edge.cluster.replica("a")
    _, address_b = await edge.cluster.replica("b")
    await edge.publish(endpoint("d", "/d", [("a", address_a)]))
    doomed = asyncio.create_task(edge.http.get("/d/sleep?s=20"))
    await a.wait_for(lambda: a.ongoing == 1)
    await edge.cluster.stop_replica(address_a)
    response = await doomed
    assert response.status_code == 503
    assert "lost the stream" in response.text
    # Still in the table (the control plane has not noticed yet): requests go
    # to the live replica, and none fails.
    await edge.publish(endpoint("d", "/d", [("a", address_a), ("b", address_b)]))
    for _ in range(10):
        response = await edge.http.get("/d/x")
        assert response.status_code == 200 and response.json()["replica"] == "b"


async def test_body_over_the_limit_is_413() -> None:
    async with fake_cluster() as running, proxy(running, max_body_bytes=1000) as server:
        _, address = await running.replica("a")
        await sync_routes(server, running.publish(endpoint("d", "/d", [("a", address)])))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http:
            assert (await http.post("/d/x", content=b"x" * 1000)).status_code == 200
            response = await http.post("/d/x", content=b"x" * 1001)
    assert response.status_code == 413
    assert "1000 bytes" in response.text
