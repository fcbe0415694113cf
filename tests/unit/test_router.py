"""The Router's choice of replica and its wait queue, without servers: a
ReplicaClient opens nothing until a request is sent on it."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from capstan import errors
from capstan.internal.v1 import replica_pb2
from capstan.v1 import controlplane_pb2
from proxy.replica_client import ReplicaClient
from proxy.router import Pool, Router, Slot, pick

pytestmark = pytest.mark.timeout(10)


def slot(in_flight: int = 0, ongoing: int = 0, broken: bool = False, name: str = "") -> Slot:
    client = ReplicaClient(f"127.0.0.1:1/{name}")
    client.ongoing, client.is_broken = ongoing, broken
    return Slot(name, client, None, in_flight)


# (slots as (in_flight, ongoing, broken), max_concurrent, avoided indices, possible picks)
PICK_CASES = [
    ([], 100, [], set()),
    ([(0, 0, False)], 100, [], {0}),
    ([(0, 0, False), (1, 0, False)], 100, [], {0}),
    ([(2, 0, False), (1, 0, False)], 100, [], {1}),
    ([(1, 1, False), (1, 0, False)], 100, [], {0, 1}),
    # The replica's own count raises a load the router underestimates...
    ([(0, 5, False), (1, 0, False)], 100, [], {1}),
    # ...but only the router's own count decides eligibility.
    ([(0, 9, False), (1, 0, False)], 1, [], {0}),
    ([(1, 0, False)], 1, [], set()),
    ([(1, 0, False), (1, 0, False)], 1, [], set()),
    ([(0, 0, True), (3, 0, False)], 100, [], {1}),
    ([(0, 0, True)], 100, [], {0}),
    ([(0, 0, False), (5, 0, False)], 100, [0], {1}),
    ([(0, 0, False), (1, 0, False)], 1, [0], {0}),
    # Power of two choices: past SCAN_LIMIT, still never a full replica.
    ([(1, 0, False)] * 5 + [(0, 0, False)], 1, [], {5}),
    ([(1, 0, False)] * 8, 1, [], set()),
]


@pytest.mark.parametrize(("loads", "max_concurrent", "avoid", "expected"), PICK_CASES)
def test_pick(
    loads: list[tuple[int, int, bool]], max_concurrent: int, avoid: list[int], expected: set[int]
) -> None:
    slots = [slot(*load, name=str(i)) for i, load in enumerate(loads)]
    avoided = tuple(slots[i] for i in avoid)
    rng = random.Random(1)
    for _ in range(50):
        chosen = pick(slots, max_concurrent, avoided, rng)
        assert (slots.index(chosen) if chosen else None) in (expected or {None})


def test_ties_are_broken_at_random() -> None:
    slots = [slot(name="a"), slot(name="b"), slot(2, name="c")]
    rng = random.Random(7)
    counts = Counter(pick(slots, 100, (), rng).replica_id for _ in range(1000))  # type: ignore[union-attr]
    assert set(counts) == {"a", "b"}
    assert 400 < counts["a"] < 600


def test_power_of_two_choices_never_picks_the_most_loaded() -> None:
    slots = [slot(load, name=str(load)) for load in range(8)]
    rng = random.Random(3)
    picked = Counter(pick(slots, 100, (), rng).replica_id for _ in range(2000))  # type: ignore[union-attr]
    assert "7" not in picked
    assert picked["0"] > picked["6"]


def endpoint(name: str, addresses: list[str], **limits: int) -> controlplane_pb2.Endpoint:
    replicas = [controlplane_pb2.RouteReplica(id=a, address=a) for a in addresses]
    return controlplane_pb2.Endpoint(
        name=name, route_prefix=f"/{name}", replicas=replicas, **limits
    )


def full_pool(max_queued: int = 10) -> tuple[Pool, Slot]:
    pool = Pool("d", random.Random(0), max_concurrent=1, max_queued=max_queued)
    only = Slot("r", ReplicaClient("127.0.0.1:1"), pool)
    pool.slots = [only]
    assert pool.try_acquire(()) is only
    return pool, only


async def test_waiters_are_served_in_fifo_order() -> None:
    pool, only = full_pool()
    order: list[int] = []

    async def request(i: int) -> None:
        got = await pool.wait(1.0)
        order.append(i)
        got.release()

    tasks = [asyncio.create_task(request(i)) for i in range(5)]
    await asyncio.sleep(0)  # let all five queue up
    assert len(pool.waiters) == 5
    only.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]
    assert only.in_flight == 0


async def test_a_full_queue_answers_back_pressure() -> None:
    pool, only = full_pool(max_queued=1)
    waiting = asyncio.create_task(pool.wait(1.0))
    await asyncio.sleep(0)
    with pytest.raises(errors.BackPressure, match="max_concurrent_queries=1"):
        await pool.wait(1.0)
    only.release()
    assert await waiting is only


async def test_no_queue_at_all_rejects_at_once() -> None:
    pool, _ = full_pool(max_queued=0)
    with pytest.raises(errors.BackPressure):
        await pool.wait(1.0)


async def test_a_cancelled_waiter_gives_its_turn_to_the_next() -> None:
    pool, only = full_pool()
    first = asyncio.create_task(pool.wait(1.0))
    second = asyncio.create_task(pool.wait(1.0))
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    only.release()
    assert await second is only
    assert list(pool.waiters) == []


async def test_no_replica_waits_then_is_unavailable() -> None:
    router = Router(no_replica_timeout_s=0.05)
    router.update([endpoint("empty", [])])
    with pytest.raises(errors.Unavailable, match="no live replica for deployment 'empty'"):
        await router.send("empty", replica_pb2.RequestFrame())


async def test_a_replica_that_appears_serves_the_waiting_request() -> None:
    router = Router(no_replica_timeout_s=5)
    router.update([endpoint("d", [])])
    waiter = asyncio.create_task(router.pool("d").wait(5))
    await asyncio.sleep(0)
    router.update([endpoint("d", ["127.0.0.1:1"])])
    got = await waiter
    assert got.client.address == "127.0.0.1:1" and got.in_flight == 1
    got.release()
    await router.close()


async def test_unknown_deployment_is_not_found() -> None:
    router = Router()
    with pytest.raises(errors.NotFound, match="'nope'"):
        await router.send("nope", replica_pb2.RequestFrame())


async def test_deleting_a_deployment_fails_its_waiters() -> None:
    router = Router()
    router.update([endpoint("d", [])])
    waiter = asyncio.create_task(router.pool("d").wait(5))
    await asyncio.sleep(0)
    router.update([])
    with pytest.raises(errors.NotFound, match="'d' was deleted"):
        await waiter


async def test_updates_keep_clients_and_counts_and_close_removed_ones() -> None:
    router = Router(drain_grace_s=0)
    router.update([endpoint("d", ["127.0.0.1:1", "127.0.0.1:2"], max_concurrent_queries=3)])
    kept = router.pool("d").slots[0]
    kept.in_flight = 2
    router.update([endpoint("d", ["127.0.0.1:1", "127.0.0.1:3"])])
    slots = router.pool("d").slots
    assert slots[0] is kept and kept.in_flight == 2
    assert [s.client.address for s in slots] == ["127.0.0.1:1", "127.0.0.1:3"]
    assert router.pool("d").max_concurrent == 100  # unset means the default
    await router.close()
