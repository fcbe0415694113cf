"""Issue 8, finding 4: request_timeout_s ends slow requests (504 over HTTP,
DEADLINE_EXCEEDED over the DataPlane and handles) and cancels them on the
replica; a client that leaves cancels its call; sync calls whose threads
cannot be interrupted keep counting until they return, so routing and
health tell the truth and the deployment serves again afterwards."""

from __future__ import annotations

import asyncio
import pathlib
import threading
import time

import grpc
import httpx
import pytest

import capstan
from capstan.internal.v1 import replica_pb2, replica_pb2_grpc
from capstan.json_values import arguments_of, to_python
from capstan.v1 import dataplane_pb2, dataplane_pb2_grpc
from tests.support.cluster import Cluster
from tests.support.waiting import eventually_sync


def _deploy_sleeper(serve, marks: pathlib.Path, **options) -> None:
    @serve.deployment(name="sleeper", **options)
    class Sleeper:
        async def __call__(self, request):
            tag = request.query_params.get("tag", "")
            if not tag:
                return "awake"
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                (marks / f"{tag}.cancelled").write_text("cancelled")
                raise

        async def nap(self, seconds: float) -> str:
            await asyncio.sleep(seconds)
            return "rested"

    Sleeper.deploy()


class _Replica:
    """The deployment's one replica, asked directly, with the cluster secret
    when the cluster keeps one (replicas then refuse calls without it)."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        client = cluster.client()
        try:
            (replica,) = client.get(name).replicas
        finally:
            client.close()
        self._stub = replica_pb2_grpc.ReplicaServiceStub(grpc.insecure_channel(replica.address))
        secret = cluster.state_dir / "cluster" / "secret"
        self._metadata = (
            (("capstan-cluster-secret", secret.read_text()),) if secret.exists() else ()
        )

    def ongoing(self) -> int:
        stats = self._stub.GetStats(
            replica_pb2.GetStatsRequest(), timeout=5, metadata=self._metadata
        )
        return stats.ongoing_requests

    def check_health(self) -> None:
        self._stub.CheckHealth(replica_pb2.CheckHealthRequest(), timeout=5, metadata=self._metadata)


def test_hung_async_handler_gets_504_and_is_cancelled(serve, cluster, tmp_path) -> None:
    _deploy_sleeper(serve, tmp_path, request_timeout_s=1.0)
    url = cluster.http_url + "/sleeper"
    started = time.monotonic()
    response = httpx.get(url, params={"tag": "hung"}, timeout=30)
    took = time.monotonic() - started
    assert response.status_code == 504
    assert 0.9 <= took < 5, took
    eventually_sync(lambda: (tmp_path / "hung.cancelled").exists(), "the replica to cancel")
    assert httpx.get(url, timeout=10).text == "awake"  # still serving


def test_deadline_exceeded_over_the_dataplane_and_handles(serve, cluster, tmp_path) -> None:
    _deploy_sleeper(serve, tmp_path, request_timeout_s=0.5)
    with grpc.insecure_channel(cluster.grpc_address) as channel:
        stub = dataplane_pb2_grpc.DataPlaneServiceStub(channel)
        request = dataplane_pb2.CallRequest(
            deployment="sleeper", method_name="nap", arguments=arguments_of([30], {}, "arguments")
        )
        with pytest.raises(grpc.RpcError) as raised:
            stub.Call(request, timeout=20)
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        quick = dataplane_pb2.CallRequest(
            deployment="sleeper", method_name="nap", arguments=arguments_of([0], {}, "arguments")
        )
        assert to_python(stub.Call(quick, timeout=20).result) == "rested"
    handle = serve.get_deployment("sleeper").get_handle()
    with pytest.raises(capstan.DeadlineExceeded):
        handle.nap.remote(30).result(timeout_s=20)
    assert handle.nap.remote(0).result(timeout_s=20) == "rested"


def test_client_disconnect_cancels_the_handler(serve, cluster, tmp_path) -> None:
    _deploy_sleeper(serve, tmp_path)

    async def leave_early() -> None:
        async with httpx.AsyncClient() as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.get(cluster.http_url + "/sleeper", params={"tag": "left"}, timeout=0.5)

    asyncio.run(leave_early())
    eventually_sync(lambda: (tmp_path / "left.cancelled").exists(), "the replica to cancel")


def test_abandoned_sync_calls_count_until_their_threads_return(serve, cluster, tmp_path) -> None:
    release = tmp_path / "release"

    @serve.deployment(
        name="blocker", max_concurrent_queries=3, max_queued_requests=1, request_timeout_s=1.0
    )
    class Blocker:
        def __call__(self, request):
            if request.query_params.get("block"):
                deadline = time.monotonic() + 60
                while not release.exists() and time.monotonic() < deadline:
                    time.sleep(0.01)
            return "done"

        def check_health(self) -> None:
            pass

    Blocker.deploy()
    url = cluster.http_url + "/blocker"
    replica = _Replica(cluster, "blocker")
    with httpx.Client(timeout=30) as http:
        calls = [
            threading.Thread(target=lambda: http.get(url, params={"block": 1})) for _ in range(3)
        ]
        for call in calls:
            call.start()
        for call in calls:
            call.join(timeout=30)  # each ends with 504 after 1 s; its thread runs on
        assert replica.ongoing() == 3
        replica.check_health()  # still healthy
        # Full: a new request queues in the proxy and times out there, truthfully.
        assert http.get(url).status_code == 504
        assert replica.ongoing() == 3
        release.write_text("go")
        eventually_sync(lambda: replica.ongoing() == 0, "the hung threads to return")
        assert http.get(url).text == "done"
