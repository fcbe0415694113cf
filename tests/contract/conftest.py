"""One fixture per executor: the contract suite runs against each.

Every executor is loaded by name through the `capstan.executors` entry
points, as the control plane loads it; the scripted one is the test plugin
in tests/plugins/scripted, installed by scripts/test.sh.

To add an executor, add a factory to EXECUTORS: it gets the test's request
(to reach fixtures such as real sshd hosts) and a fresh state folder (the
same one again when a test simulates a control-plane restart), and returns
the config section the executor is loaded with.
"""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from scripted_executor import World

from executors.base import Executor
from executors.registry import load_executor

ConfigFactory = Callable[[pytest.FixtureRequest, pathlib.Path], dict[str, Any]]

EXECUTORS: dict[str, ConfigFactory] = {
    "local": lambda request, state_dir: {"num_cpus": 4, "start_timeout_s": 60},
    "ssh": lambda request, state_dir: request.getfixturevalue("ssh_hosts").executor_config(
        state_dir
    ),
    "ray": lambda request, state_dir: request.getfixturevalue("ray_cluster").executor_config(),
    # One world per test: a second instance (a restarted control plane's)
    # finds the replicas the first one launched.
    "scripted": lambda request, state_dir: {"world": request.getfixturevalue("scripted_world")},
}


@pytest.fixture(params=sorted(EXECUTORS))
def executor_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def state_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "state"


@pytest.fixture
def scripted_world() -> World:
    """The scripted executor's world for one test (its replicas are stopped
    with every other executor's, by `make_executor`)."""
    return World()


@pytest.fixture
async def make_executor(
    request: pytest.FixtureRequest, executor_name: str, state_dir: pathlib.Path
) -> AsyncIterator[Callable[[], Executor]]:
    """Makes executor instances on the test's state folder; at the end every
    replica still running is stopped and every instance closed."""
    made: list[Executor] = []

    def make() -> Executor:
        config = EXECUTORS[executor_name](request, state_dir)
        made.append(load_executor(executor_name, config, state_dir))
        return made[-1]

    yield make
    if made:
        last = made[-1]
        for ref in await last.observe():
            await last.stop(ref, 5.0)
    for executor in made:
        await executor.close()
