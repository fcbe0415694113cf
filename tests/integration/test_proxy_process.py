"""`python -m proxy` as a real process: start-up line, serving, SIGTERM drain."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest

from capstan.json_values import arguments_of, to_python
from capstan.v1 import dataplane_pb2, dataplane_pb2_grpc
from tests.proxy_support.fake_control_plane import endpoint
from tests.proxy_support.harness import FakeCluster, fake_cluster

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]


@contextlib.asynccontextmanager
async def proxy_process(
    cluster: FakeCluster,
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str, str]]:
    """The proxy process and the http and grpc addresses it printed."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy",
        "--control-plane", cluster.control_plane_address,
        "--http-port", "0", "--grpc-port", "0", "--drain-timeout-s", "5",
        cwd=REPO, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(20):
            line = (await process.stdout.readline()).decode()  # type: ignore[union-attr]
        assert line.startswith("capstan proxy listening "), line
        fields = dict(part.split("=", 1) for part in line.split()[3:])
        yield process, fields["http"], fields["grpc"]
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_serves_then_drains_on_sigterm() -> None:
    async with fake_cluster() as cluster:
        replica, address = await cluster.replica("a")
        cluster.publish(endpoint("d", "/d", [("a", address)]))
        async with proxy_process(cluster) as (process, http_address, grpc_address):
            async with httpx.AsyncClient(base_url=f"http://{http_address}", timeout=10) as http:
                assert (await http.get("/-/healthz")).text == "success"
                assert (await http.get("/d/x")).json()["replica"] == "a"
                async with grpc.aio.insecure_channel(grpc_address) as channel:
                    stub = dataplane_pb2_grpc.DataPlaneServiceStub(channel)
                    reply = await stub.Call(
                        dataplane_pb2.CallRequest(
                            deployment="d", arguments=arguments_of([7], {}, "arguments")
                        )
                    )
                    assert to_python(reply.result) == [7]
                slow = asyncio.create_task(http.get("/d/sleep?s=1"))
                await replica.wait_for(lambda: replica.ongoing == 1)
                process.send_signal(signal.SIGTERM)
                response = await slow
            assert response.status_code == 200
            async with asyncio.timeout(15):
                assert await process.wait() == 0
