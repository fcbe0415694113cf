"""The control plane with the real local executor and replica worker: a
rollout, a broken update that keeps the old version serving, adoption across
a control-plane restart, and delete. Real processes; none left behind."""

from __future__ import annotations

import os
import pathlib
import stat
from collections.abc import AsyncIterator

import grpc
import pytest

from capstan.internal.v1 import replica_pb2, replica_pb2_grpc
from capstan.json_values import to_value
from capstan.links import SECRET_KEY
from capstan.v1 import controlplane_pb2 as cp
from capstan.v1 import controlplane_pb2_grpc, deployment_pb2
from controlplane.server import ControlPlane, load_executors
from controlplane.settings import Settings
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(120)


class LocalPlane:
    def __init__(self, state_dir: pathlib.Path) -> None:
        self.settings = Settings(
            state_dir=state_dir,
            port=0,
            executors={"local": {"num_cpus": 8}},
            reconcile_interval_s=0.1,
        )
        self.plane: ControlPlane | None = None
        self.channel: grpc.aio.Channel | None = None

    async def start(self) -> controlplane_pb2_grpc.ControlPlaneServiceStub:
        self.plane = await ControlPlane.start(self.settings, load_executors(self.settings))
        self.channel = grpc.aio.insecure_channel(self.plane.address)
        return controlplane_pb2_grpc.ControlPlaneServiceStub(self.channel)

    async def stop(self) -> None:
        if self.channel is not None:
            await self.channel.close()
        if self.plane is not None:
            await self.plane.stop()
        self.channel = self.plane = None


@pytest.fixture
async def local(tmp_path: pathlib.Path) -> AsyncIterator[LocalPlane]:
    plane = LocalPlane(tmp_path / "state")
    yield plane
    if plane.plane is None:
        await plane.start()
    assert plane.plane is not None
    await plane.plane.reconciler.stop_all_replicas(timeout_s=60)  # type: ignore[union-attr]
    await plane.stop()


def spec(import_path: str, version: str, user_config: dict) -> deployment_pb2.DeploymentSpec:
    msg = deployment_pb2.DeploymentSpec(
        name="threshold",
        version=version,
        num_replicas=1,
        user_config=to_value(user_config, "user_config"),
        graceful_shutdown_wait_loop_s=0.0,
        graceful_shutdown_timeout_s=5.0,
    )
    msg.code.import_path = import_path
    return msg


async def stats(address: str, secret: str) -> replica_pb2.GetStatsResponse:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = replica_pb2_grpc.ReplicaServiceStub(channel)
        metadata = ((SECRET_KEY, secret),)
        return await stub.GetStats(replica_pb2.GetStatsRequest(), timeout=5, metadata=metadata)


async def test_local_rollout_failure_adoption_and_delete(local: LocalPlane) -> None:
    stub = await local.start()
    good = spec("tests.apps.configured:Threshold", "v1", {"threshold": 1})
    reply = await stub.ApplyDeployment(
        cp.ApplyDeploymentRequest(spec=good, wait=True, timeout_s=60)
    )
    [replica] = reply.deployment.replicas
    assert reply.deployment.state == cp.DEPLOYMENT_STATE_HEALTHY
    secret_file = local.settings.state_dir / "cluster" / "secret"
    secret = secret_file.read_text()
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    first = await stats(replica.address, secret)
    assert (first.replica_id, first.version) == (replica.id, "v1")

    broken = spec("tests.apps.configured:Broken", "v2", {"threshold": 1})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ApplyDeployment(cp.ApplyDeploymentRequest(spec=broken, wait=True, timeout_s=60))
    assert caught.value.code() == grpc.StatusCode.ABORTED
    assert "boom" in (caught.value.details() or "")
    after = (await stub.GetDeployment(cp.GetDeploymentRequest(name="threshold"))).deployment
    seen = [(r.id, r.version, cp.ReplicaState.Name(r.state), r.message) for r in after.replicas]
    assert after.version == "v1" and [r.id for r in after.replicas] == [replica.id], seen

    # A restarted control plane adopts the running process instead of restarting it.
    await local.stop()
    stub = await local.start()
    adopted = (await stub.GetDeployment(cp.GetDeploymentRequest(name="threshold"))).deployment
    assert [(r.id, r.state) for r in adopted.replicas] == [(replica.id, cp.REPLICA_STATE_RUNNING)]
    # ... with the same cluster secret, so the replica still takes its calls
    # (a reconfigure in place) and ours.
    assert secret_file.read_text() == secret
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert (await stats(replica.address, secret)).pid == first.pid
    retuned = spec("tests.apps.configured:Threshold", "v1", {"threshold": 2})
    request = cp.ApplyDeploymentRequest(spec=retuned, wait=True, timeout_s=60)
    retuned_reply = await stub.ApplyDeployment(request)
    assert retuned_reply.deployment.state == cp.DEPLOYMENT_STATE_HEALTHY
    assert [r.id for r in retuned_reply.deployment.replicas] == [replica.id]
    assert (await stats(replica.address, secret)).pid == first.pid

    await stub.DeleteDeployment(cp.DeleteDeploymentRequest(name="threshold", wait=True))
    await eventually(lambda: not _is_alive(first.pid), "the replica process to exit", timeout_s=30)


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
