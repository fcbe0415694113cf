"""The database stays small (issue 8): a real control plane keeps the last
`versions_kept` applies of a deployment and a bounded event log, and a
deleted deployment takes its history with it. Before, 100 applies of a big
user_config grew state.db by every one of them, for ever."""

from __future__ import annotations

import json
import pathlib
import sqlite3

import grpc
import pytest
from scripted_executor import World

from capstan.json_values import to_value
from capstan.v1 import controlplane_pb2 as cp
from capstan.v1 import controlplane_pb2_grpc, deployment_pb2
from controlplane.records import ReplicaRecord, ReplicaState
from controlplane.server import ControlPlane
from controlplane.settings import Settings
from controlplane.spec import DeploymentSpec
from controlplane.store import Retention, Store

pytestmark = pytest.mark.timeout(120)

APPLIES = 100
CONFIG_BYTES = 512 << 10
REPLICAS = 1000


def _db_bytes(state_dir: pathlib.Path) -> int:
    return sum(path.stat().st_size for path in state_dir.glob("state.db*"))


async def test_history_is_pruned_and_the_database_stays_bounded(tmp_path: pathlib.Path) -> None:
    state_dir = tmp_path / "state"
    world = World()
    settings = Settings(
        state_dir=state_dir,
        port=0,
        default_executor="scripted",
        executors={"scripted": {"world": world}},
        reconcile_interval_s=0.05,
    )
    plane = await ControlPlane.start(settings)
    try:
        async with grpc.aio.insecure_channel(plane.address) as channel:
            stub = controlplane_pb2_grpc.ControlPlaneServiceStub(channel)
            for index in range(APPLIES):
                user_config = to_value({"n": index, "pad": "x" * (CONFIG_BYTES - 32)}, "config")
                spec = deployment_pb2.DeploymentSpec(
                    name="big", num_replicas=0, version=f"v{index}", user_config=user_config
                )
                spec.code.import_path = "tests.apps.hello:Hello"
                await stub.ApplyDeployment(cp.ApplyDeploymentRequest(spec=spec), timeout=10)
            # 20 versions of ~0.5 MiB, the spec in force and the stable one,
            # and SQLite's slack; 100 versions would be over 50 MiB.
            assert _db_bytes(state_dir) < 40 << 20
            listed = await stub.ListDeployments(cp.ListDeploymentsRequest(), timeout=10)
            assert listed.deployments[0].version == f"v{APPLIES - 1}"
            beside = await Store.open(settings.db_path, Retention(1, 1))  # a reader beside it
            try:
                assert len(await beside.history("big")) == settings.versions_kept == 20
            finally:
                await beside.close()
            delete = cp.DeleteDeploymentRequest(name="big", wait=True)
            await stub.DeleteDeployment(delete, timeout=30)
    finally:
        await plane.stop()
        await world.close()
    store = await Store.open(settings.db_path, Retention(1, 1))
    try:
        assert await store.history("big") == []
        assert await store.events("big") == []
    finally:
        await store.close()


async def test_the_store_keeps_the_last_versions_and_events(tmp_path: pathlib.Path) -> None:
    store = await Store.open(tmp_path / "state.db", Retention(versions=20, events=30))
    try:
        for index in range(APPLIES):
            await store.apply(DeploymentSpec(name="big", import_path="a:B"), f"v{index}")
        history = await store.history("big")
        assert [h.version for h in history] == [f"v{i}" for i in range(APPLIES - 20, APPLIES)]
        assert len(await store.events("big", limit=1000)) == 30
    finally:
        await store.close()


async def test_replicas_share_one_stored_user_config(tmp_path: pathlib.Path) -> None:
    """A thousand replicas with a 512 KiB user_config would be 512 MiB if
    each row held the text; they share one copy, and it goes with them."""
    user_config = json.dumps({"pad": "x" * CONFIG_BYTES})
    store = await Store.open(tmp_path / "state.db", Retention(versions=20, events=30))
    try:
        for index in range(REPLICAS):
            await store.put_replica(
                ReplicaRecord(
                    id=f"big-{index}", deployment="big", version="v1", code_hash="h",
                    state=ReplicaState.RUNNING, executor="scripted", user_config=user_config,
                )
            )  # fmt: skip
        assert _db_bytes(tmp_path) < 16 << 20
        replicas = await store.replicas("big")
        assert len(replicas) == REPLICAS and all(r.user_config == user_config for r in replicas)
        for index in range(REPLICAS):
            await store.delete_replica(f"big-{index}")
        assert await store.replicas() == []
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "state.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM user_configs").fetchone() == (0,)
