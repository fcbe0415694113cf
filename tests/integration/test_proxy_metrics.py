"""The proxy's Prometheus metrics at /-/metrics and its access log, against
the real proxy in front of real (hand-written) replica servers."""

from __future__ import annotations

import json
import pathlib

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from capstan.v1 import dataplane_pb2, dataplane_pb2_grpc
from tests.proxy_support.fake_control_plane import endpoint
from tests.proxy_support.harness import fake_cluster, proxy, sync_routes
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(30)


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """{(sample name, labels): value} from the exposition format."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_requests_are_counted_timed_and_logged(tmp_path: pathlib.Path) -> None:
    access_log = tmp_path / "logs" / "access.log"
    async with fake_cluster() as running, proxy(running, access_log=str(access_log)) as server:
        _, address = await running.replica("a")
        await sync_routes(server, running.publish(endpoint("api", "/api", [("a", address)])))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http:
            for _ in range(3):
                assert (await http.get("/api/x")).status_code == 200
            failed = await http.get("/api/fail", headers={"x-request-id": "req-42"})
            assert failed.status_code == 500
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
                stub = dataplane_pb2_grpc.DataPlaneServiceStub(channel)
                await stub.Call(dataplane_pb2.CallRequest(deployment="api", method_name="echo"))
            scraped = await http.get("/-/metrics")
        assert scraped.headers["content-type"].startswith("text/plain; version=0.0.4")
        metrics = samples(scraped.text)

        def count(protocol: str, code: str) -> float:
            labels = {"deployment": "api", "protocol": protocol, "code": code}
            return metrics[("capstan_proxy_requests_total", frozenset(labels.items()))]

        assert (count("http", "200"), count("http", "500"), count("grpc", "OK")) == (3, 1, 1)
        latency = frozenset({"deployment": "api", "protocol": "http"}.items())
        assert metrics[("capstan_proxy_request_duration_seconds_count", latency)] == 4
        idle = frozenset({"deployment": "api"}.items())
        assert metrics[("capstan_proxy_requests_in_flight", idle)] == 0
        assert metrics[("capstan_proxy_requests_queued", idle)] == 0

        def logged() -> list[dict]:
            if not access_log.exists():
                return []
            lines = access_log.read_text().splitlines()
            return [json.loads(line) for line in lines] if len(lines) >= 5 else []

        entries = await eventually(logged, "the access log to be written", timeout_s=5)
    [failure] = [e for e in entries if e["request_id"] == "req-42"]
    assert failure["status"] == 500 and failure["path"] == "/api/fail"
    assert failure["deployment"] == "api" and failure["method"] == "GET"
    answered = [e for e in entries if e["status"] == 200]
    assert len(answered) == 3 and {e["replica"] for e in answered} == {address}
    assert all(e["latency_ms"] > 0 and len(e["request_id"]) == 32 for e in answered)
    assert {e["protocol"] for e in entries} == {"http", "grpc"}
