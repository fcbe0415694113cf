"""The model cache behind @serve.multiplexed and the router's model affinity."""

from __future__ import annotations

import asyncio
import random

import pytest

from capstan.context import loaded_models
from capstan.multiplex import ModelCache, multiplexed
from proxy.router import Slot, pick_for_model


class _Client:
    def __init__(self, models: set[str], ongoing: int = 0) -> None:
        self.model_ids = frozenset(models)
        self.ongoing = ongoing
        self.is_broken = False


def _slot(name: str, models: set[str], in_flight: int = 0) -> Slot:
    return Slot(name, _Client(models), in_flight=in_flight)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("slots", "expected"),
    [
        # The holder wins even when busier.
        ([_slot("a", set()), _slot("b", {"m"}, in_flight=3)], "b"),
        # A full holder is skipped; then the replica with the fewest models.
        ([_slot("a", {"x", "y"}), _slot("b", {"m"}, in_flight=4), _slot("c", {"z"})], "c"),
        # Nobody holds it and everyone holds as many: the least loaded.
        ([_slot("a", {"x"}, in_flight=2), _slot("b", {"y"}, in_flight=1)], "b"),
    ],
)
def test_pick_for_model(slots: list[Slot], expected: str) -> None:
    chosen = pick_for_model(slots, 4, "m", rng=random.Random(1))
    assert chosen is not None and chosen.replica_id == expected


def test_pick_for_model_falls_back_to_any_with_room() -> None:
    slots = [_slot("a", set(), in_flight=4), _slot("b", {"x", "y"})]
    assert pick_for_model(slots, 4, "m").replica_id == "b"
    assert pick_for_model([_slot("a", set(), in_flight=4)], 4, "m") is None


async def test_cache_loads_once_for_concurrent_requests_and_evicts_lru() -> None:
    loads: list[str] = []

    async def load(model_id: str) -> str:
        loads.append(model_id)
        await asyncio.sleep(0.01)
        return model_id.upper()

    cache = ModelCache(max_models=2)
    got = await asyncio.gather(*(cache.get("a", lambda: load("a")) for _ in range(5)))
    assert got == ["A"] * 5 and loads == ["a"]
    await cache.get("b", lambda: load("b"))
    await cache.get("a", lambda: load("a"))  # a is now the most recent
    await cache.get("c", lambda: load("c"))  # evicts b
    assert loaded_models()[1] == ("a", "c")
    await cache.get("b", lambda: load("b"))
    assert loads == ["a", "b", "c", "b"]


async def test_failed_load_reaches_every_waiter_and_is_retried() -> None:
    attempts = 0

    async def load() -> str:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0.01)
        if attempts == 1:
            raise RuntimeError("disk full")
        return "ok"

    cache = ModelCache(max_models=1)
    results = await asyncio.gather(
        *(cache.get("m", load) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)
    assert await cache.get("m", load) == "ok"


def test_decorator_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="positive"):
        multiplexed(max_num_models_per_replica=0)
    with pytest.raises(TypeError, match="async"):

        @multiplexed
        def sync_loader(model_id):
            return model_id
