"""The SQLite store on a real file: applies, history, prev_version, route
conflicts, failure and rollback, replicas, events, and a reopened store."""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import sqlite3
from collections.abc import AsyncIterator

import pytest

from capstan.errors import AlreadyExists, NotFound, VersionConflict
from controlplane.records import DeploymentState, ReplicaRecord, ReplicaState
from controlplane.scheduler import Placement
from controlplane.spec import DeploymentSpec
from controlplane.store import SCHEMA_VERSION, Retention, Store
from executors.base import ReplicaRef

RETENTION = Retention(versions=20, events=1000)

pytestmark = pytest.mark.timeout(30)


def spec(name: str = "hello", **fields: object) -> DeploymentSpec:
    base = DeploymentSpec(name=name, import_path="app:Hello", route_prefix=f"/{name}")
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


@pytest.fixture
async def store(tmp_path: pathlib.Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "state.db", RETENTION)
    yield opened
    await opened.close()


async def test_apply_stores_spec_and_history(store: Store) -> None:
    first = await store.apply(spec(num_replicas=2), "v1")
    assert (first.version, first.generation, first.state) == ("v1", 1, DeploymentState.UPDATING)
    second = await store.apply(spec(num_replicas=3), "v2")
    assert (second.generation, second.spec.num_replicas) == (2, 3)
    assert second.created_at == first.created_at
    history = await store.history("hello")
    assert [(h.version, h.generation, h.spec.num_replicas) for h in history] == [
        ("v1", 1, 2),
        ("v2", 2, 3),
    ]
    assert [e.kind for e in await store.events("hello")] == ["applied", "applied"]


async def test_prev_version_mismatch_changes_nothing(store: Store) -> None:
    await store.apply(spec(), "v1")
    with pytest.raises(VersionConflict, match='prev_version "v0" does not match version "v1"'):
        await store.apply(spec(prev_version="v0", num_replicas=5), "v2")
    record = await store.get("hello")
    assert record is not None and (record.version, record.spec.num_replicas) == ("v1", 1)
    assert len(await store.history("hello")) == 1
    matched = await store.apply(spec(prev_version="v1"), "v2")
    assert matched.version == "v2"


async def test_prev_version_of_an_unknown_deployment_conflicts(store: Store) -> None:
    with pytest.raises(VersionConflict, match="no deployment"):
        await store.apply(spec(prev_version="v1"), "v2")
    assert await store.get("hello") is None


async def test_route_prefix_is_unique(store: Store) -> None:
    await store.apply(spec("a", route_prefix="/api"), "v1")
    with pytest.raises(AlreadyExists, match='"/api" is already used by deployment "a"'):
        await store.apply(spec("b", route_prefix="/api"), "v1")
    assert await store.get("b") is None
    await store.apply(spec("b", route_prefix=None), "v1")  # not on HTTP: no conflict
    await store.mark_deleting("a")
    await store.apply(spec("c", route_prefix="/api"), "v1")  # freed by the delete


async def test_fail_rolls_back_to_the_stable_spec(store: Store) -> None:
    first = await store.apply(spec(), "v1")
    await store.mark_stable("hello", first.generation)
    second = await store.apply(spec(import_path="app:Broken"), "v2")
    failed = await store.fail("hello", second.generation, "constructor raised")
    assert failed is not None
    assert (failed.state, failed.version) == (DeploymentState.DEPLOY_FAILED, "v1")
    assert failed.spec.import_path == "app:Hello" and not failed.is_halted
    assert failed.message == "constructor raised; rolled back to version v1"
    # A second failure of the same apply changes nothing more.
    assert await store.fail("hello", second.generation, "again") is None
    # The failed apply stays in the history.
    assert [h.version for h in await store.history("hello")] == ["v1", "v2"]


async def test_fail_without_a_stable_spec_halts(store: Store) -> None:
    record = await store.apply(spec(), "v1")
    failed = await store.fail("hello", record.generation, "import failed")
    assert failed is not None and failed.is_halted and failed.message == "import failed"
    # The next apply clears it.
    again = await store.apply(spec(), "v2")
    assert not again.is_halted and again.state == DeploymentState.UPDATING


async def test_fail_of_a_superseded_apply_is_ignored(store: Store) -> None:
    first = await store.apply(spec(), "v1")
    await store.apply(spec(), "v2")
    assert await store.fail("hello", first.generation, "late") is None


async def test_delete_then_remove(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.mark_deleting("nope")
    record = await store.apply(spec(), "v1")
    deleting = await store.mark_deleting("hello")
    assert deleting.is_deleting and deleting.state == DeploymentState.DELETING
    await store.remove("hello", record.generation)
    assert await store.get("hello") is None
    # A removed deployment takes its history and events with it.
    assert await store.history("hello") == []
    assert await store.events("hello") == []


async def test_remove_spares_a_deployment_applied_again(store: Store) -> None:
    record = await store.apply(spec(), "v1")
    await store.mark_deleting("hello")
    await store.apply(spec(), "v2")
    await store.remove("hello", record.generation)
    assert await store.get("hello") is not None


async def test_replicas_round_trip(store: Store) -> None:
    replica = ReplicaRecord(
        id="hello-1",
        deployment="hello",
        version="v1",
        code_hash="abc",
        state=ReplicaState.RUNNING,
        executor="local",
        user_config='{"a": 1}',
        max_concurrent_queries=7,
        ref=ReplicaRef("hello-1", "local", "127.0.0.1:5000", "n1", "x", {"pid": "9"}),
        placement=Placement("n1", 1.0, {"0": 0.5}),
        started_at=12.5,
    )
    await store.put_replica(replica)
    assert await store.replicas() == [replica]
    draining = dataclasses.replace(replica, state=ReplicaState.DRAINING, message="scale down")
    await store.put_replica(draining)
    assert await store.replicas("hello") == [draining]
    assert await store.replicas("other") == []
    await store.delete_replica("hello-1")
    assert await store.replicas() == []


async def test_a_reopened_store_has_everything(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "state.db"
    first = await Store.open(path, RETENTION)
    record = await first.apply(spec(user_config='{"x": 1}'), "v1")
    await first.mark_stable("hello", record.generation)
    await first.put_replica(
        ReplicaRecord("r1", "hello", "v1", record.code_hash, ReplicaState.PENDING, "local")
    )
    await first.add_event("hello", "r1", "note", "hello there")
    await first.close()

    again = await Store.open(path, RETENTION)
    try:
        reread = await again.get("hello")
        assert reread is not None and reread.is_stable
        assert reread.spec == record.spec and reread.state == DeploymentState.HEALTHY
        assert [r.id for r in await again.replicas()] == ["r1"]
        assert (await again.events("hello"))[-1].message == "hello there"
    finally:
        await again.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_an_unknown_schema_is_refused(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "state.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA user_version = 99")
        conn.commit()
    with pytest.raises(RuntimeError, match="schema version 99"):
        await Store.open(path, RETENTION)


async def test_status_writes_never_hide_a_failure(store: Store) -> None:
    record = await store.apply(spec(), "v1")
    await store.fail("hello", record.generation, "broken")
    # A pass that read the record before the failure tries to write its view.
    await store.set_status("hello", record.generation, DeploymentState.UPDATING, "1/1 running")
    await store.mark_stable("hello", record.generation)
    after = await store.get("hello")
    assert after is not None and after.state == DeploymentState.DEPLOY_FAILED
    assert after.message == "broken" and after.stable_spec is None


async def test_status_of_a_superseded_apply_is_dropped(store: Store) -> None:
    first = await store.apply(spec(), "v1")
    await store.apply(spec(), "v2")
    await store.set_status("hello", first.generation, DeploymentState.HEALTHY, "")
    await store.mark_stable("hello", first.generation)
    after = await store.get("hello")
    assert after is not None and after.state == DeploymentState.UPDATING
    assert after.stable_spec is None
