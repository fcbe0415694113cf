"""Bearer-token auth on the control API: a real control plane on 127.0.0.1:0
with a token, called by the SDK client, a raw stub, the health service and the
proxy's RouteWatcher; and the Settings rule that off-loopback needs a token."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from capstan.client import ControlPlaneClient
from capstan.errors import Unauthenticated
from capstan.v1 import controlplane_pb2 as cp
from capstan.v1 import controlplane_pb2_grpc
from controlplane.server import ControlPlane
from controlplane.settings import Settings, parse_settings
from proxy.watcher import RouteWatcher, Snapshot

pytestmark = pytest.mark.timeout(60)

TOKEN = "s3cret-token"


@pytest.fixture
async def address(tmp_path: pathlib.Path) -> AsyncIterator[str]:
    settings = Settings(
        state_dir=tmp_path / "state",
        port=0,
        default_executor="scripted",
        executors={"scripted": {}},
        token=TOKEN,
    )
    plane = await ControlPlane.start(settings)
    try:
        yield plane.address
    finally:
        await plane.stop()


def list_deployments(address: str, token: str | None) -> list[cp.Deployment]:
    client = ControlPlaneClient(address, token=token)
    try:
        return client.list()
    finally:
        client.close()


@pytest.mark.parametrize("token", ["", "wrong-token", TOKEN + "x", TOKEN[:-1]])
async def test_client_without_the_right_token_is_unauthenticated(address: str, token: str) -> None:
    with pytest.raises(Unauthenticated, match="missing or wrong bearer token"):
        await asyncio.to_thread(list_deployments, address, token)


async def test_client_with_the_token_works(address: str) -> None:
    assert await asyncio.to_thread(list_deployments, address, TOKEN) == []


async def test_client_takes_the_token_from_the_environment(
    address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAPSTAN_TOKEN", TOKEN)
    assert await asyncio.to_thread(list_deployments, address, None) == []
    monkeypatch.delenv("CAPSTAN_TOKEN")
    with pytest.raises(Unauthenticated):
        await asyncio.to_thread(list_deployments, address, None)


async def test_streaming_call_without_token_is_unauthenticated(address: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = controlplane_pb2_grpc.ControlPlaneServiceStub(channel)
        stream = stub.WatchRoutes(cp.WatchRoutesRequest(), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stream.read()
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_describe_needs_the_token(address: str) -> None:
    request = cp.DescribeDeploymentRequest(name="absent")
    async with grpc.aio.insecure_channel(address) as channel:
        stub = controlplane_pb2_grpc.ControlPlaneServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.DescribeDeployment(request, timeout=5)
        bearer = (("authorization", f"Bearer {TOKEN}"),)
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.DescribeDeployment(request, timeout=5, metadata=bearer)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert missing.value.details() == 'deployment "absent" not found'


async def test_health_check_needs_no_token(address: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        service = "capstan.v1.ControlPlaneService"
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_route_watcher_with_the_token_receives_a_table(address: str) -> None:
    tables: list[Snapshot] = []
    watcher = RouteWatcher(address, tables.append, token=TOKEN)
    task = asyncio.create_task(watcher.run())
    try:
        assert await watcher.wait_ready(timeout_s=10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert tables and watcher.revision == tables[-1].revision


async def test_route_watcher_without_token_receives_nothing(address: str) -> None:
    tables: list[Snapshot] = []
    watcher = RouteWatcher(address, tables.append, token="")
    task = asyncio.create_task(watcher.run())
    try:
        assert not await watcher.wait_ready(timeout_s=1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert tables == [] and watcher.revision is None and not watcher.is_connected


def test_settings_off_loopback_without_token_names_the_fix() -> None:
    with pytest.raises(ValueError, match=r"0\.0\.0\.0.*--token-file or CAPSTAN_TOKEN"):
        Settings(host="0.0.0.0")
    with pytest.raises(ValueError, match="bearer token"):
        Settings(host="10.1.2.3")


def test_settings_off_loopback_with_token_is_accepted() -> None:
    settings = Settings(host="0.0.0.0", token=TOKEN)
    assert settings.token == TOKEN
    assert TOKEN not in repr(settings)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_settings_on_loopback_need_no_token(host: str) -> None:
    assert Settings(host=host).token == ""


def test_parse_settings_reads_the_token_from_a_file_or_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    monkeypatch.setenv("CAPSTAN_HOST", "0.0.0.0")
    monkeypatch.setenv("CAPSTAN_TOKEN", TOKEN)
    assert parse_settings([]).token == TOKEN
    token_file = tmp_path / "token"
    token_file.write_text("other\n")
    assert parse_settings(["--token-file", str(token_file)]).token == "other"
    monkeypatch.delenv("CAPSTAN_TOKEN")
    with pytest.raises(ValueError, match="set a bearer token"):
        parse_settings([])
    token_file.write_text("  \n")
    with pytest.raises(ValueError, match=r"token_file: .* is empty"):
        parse_settings(["--token-file", str(token_file)])
    with pytest.raises(SystemExit):  # a token is never taken from the command line
        parse_settings(["--token", TOKEN])
