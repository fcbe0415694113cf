"""ListDeployments and ListApplications page their answers (AIP-158): a
real control plane gives every item exactly once across pages while items
come and go, and a listing over gRPC's 64 MiB message limit (about 60
deployments with a 1 MiB user_config each) still succeeds, page by page."""

from __future__ import annotations

import asyncio
import pathlib

import grpc
import pytest
from scripted_executor import World

from capstan.client import ControlPlaneClient
from capstan.json_values import to_value
from capstan.v1 import controlplane_pb2 as cp
from capstan.v1 import controlplane_pb2_grpc
from controlplane.limits import MAX_USER_CONFIG_BYTES
from controlplane.paging import PAGE_BUDGET_BYTES
from controlplane.server import ControlPlane
from controlplane.settings import Settings
from controlplane.spec import DeploymentSpec
from controlplane.store import Retention, Store
from tests.support.controlplane_harness import Harness, expect_error, spec

pytestmark = pytest.mark.timeout(120)

BIG = 70


async def _apply(harness: Harness, name: str, **fields: object) -> None:
    request = cp.ApplyDeploymentRequest(spec=spec(name=name, num_replicas=0, **fields))
    await harness.stub.ApplyDeployment(request, timeout=30)


async def _delete(harness: Harness, name: str) -> None:
    request = cp.DeleteDeploymentRequest(name=name, wait=True)
    await harness.stub.DeleteDeployment(request, timeout=30)


async def _page(harness: Harness, token: str, size: int = 3) -> cp.ListDeploymentsResponse:
    request = cp.ListDeploymentsRequest(page_size=size, page_token=token)
    return await harness.stub.ListDeployments(request, timeout=10)


async def test_each_deployment_once_across_pages_while_others_come_and_go(
    harness: Harness,
) -> None:
    names = [f"d{n}" for n in range(8)]
    for name in names:
        await _apply(harness, name)
    first = await _page(harness, "")
    assert [d.id for d in first.deployments] == ["d0", "d1", "d2"]
    await _delete(harness, "d1")  # seen already
    await _delete(harness, "d5")  # not seen yet
    await _apply(harness, "d0a")  # sorts before the token: not given
    await _apply(harness, "d4a")  # sorts after it: given
    seen, token = [d.id for d in first.deployments], first.next_page_token
    while token:
        page = await _page(harness, token)
        assert 0 < len(page.deployments) <= 3
        seen += [d.id for d in page.deployments]
        token = page.next_page_token
    assert seen == ["d0", "d1", "d2", "d3", "d4", "d4a", "d6", "d7"]


async def test_applications_page_too(harness: Harness) -> None:
    for n in range(5):
        app = cp.ApplicationSpec(name=f"app{n}", route_prefix=f"/app{n}")
        app.deployments.append(spec(name="Model", num_replicas=0))
        await harness.stub.ApplyApplication(cp.ApplyApplicationRequest(application=app))
    seen, token = [], ""
    while True:
        request = cp.ListApplicationsRequest(page_size=2, page_token=token)
        page = await harness.stub.ListApplications(request, timeout=10)
        assert 0 < len(page.applications) <= 2
        seen += [a.name for a in page.applications]
        if not (token := page.next_page_token):
            break
    assert seen == [f"app{n}" for n in range(5)]


async def test_a_malformed_token_is_invalid_argument(harness: Harness) -> None:
    await _apply(harness, "d0")
    for call in (
        harness.stub.ListDeployments(cp.ListDeploymentsRequest(page_token="nonsense")),
        harness.stub.ListApplications(cp.ListApplicationsRequest(page_token="nonsense")),
    ):
        assert "page_token" in await expect_error(call, grpc.StatusCode.INVALID_ARGUMENT)


async def _seed_big(settings: Settings) -> None:
    """BIG deployments of replicas 0 and a 1 MiB user_config, straight into
    the store (as a control plane restarting on them finds them): 70 applies
    through the edge would spend most of the test validating user_config."""
    store = await Store.open(settings.db_path, Retention(versions=1, events=10))
    try:
        pad = "x" * (MAX_USER_CONFIG_BYTES - 64)
        for n in range(BIG):
            config = to_value({"n": n, "pad": pad}, "user_config")
            wire = spec(name=f"big{n:02}", num_replicas=0, executor="scripted", user_config=config)
            await store.apply(DeploymentSpec.from_proto(wire), f"v{n}")
    finally:
        await store.close()


async def test_a_listing_over_the_message_limit_comes_in_pages(tmp_path: pathlib.Path) -> None:
    world = World()
    settings = Settings(
        state_dir=tmp_path / "state",
        port=0,
        default_executor="scripted",
        executors={"scripted": {"world": world}},
    )
    settings.state_dir.mkdir()
    await _seed_big(settings)
    plane = await ControlPlane.start(settings)
    try:
        async with grpc.aio.insecure_channel(plane.address) as channel:  # 4 MiB default
            stub = controlplane_pb2_grpc.ControlPlaneServiceStub(channel)
            first = await stub.ListDeployments(cp.ListDeploymentsRequest(), timeout=10)
        assert 0 < len(first.deployments) < BIG and first.ByteSize() <= PAGE_BUDGET_BYTES
        client = ControlPlaneClient(plane.address, token="")  # the CLI's client
        try:
            listed = await asyncio.to_thread(client.list)
        finally:
            client.close()
    finally:
        await plane.stop()
        await world.close()
    assert [d.id for d in listed] == [f"big{n:02}" for n in range(BIG)]
    assert sum(d.ByteSize() for d in listed) > 64 << 20
