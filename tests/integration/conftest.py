from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator

import pytest
from scripted_executor import World

from tests.support.controlplane_harness import Harness


@pytest.fixture
async def harness(tmp_path: pathlib.Path) -> AsyncIterator[Harness]:
    """A control plane on the scripted executor, stopped after the test."""
    world = World()
    running = Harness(tmp_path / "state", world)
    await running.start()
    yield running
    await running.stop()
    await world.close()
