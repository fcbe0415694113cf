"""One fixture per executor: the contract suite runs against each.

To add an executor, add a factory to EXECUTORS: it gets the test's request
(to reach session fixtures such as real sshd hosts) and a fresh state folder
(the same one again when a test simulates a control-plane restart), and
returns a new, unstarted instance.
"""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator, Callable

import pytest

from executors.base import Executor
from executors.local import LocalExecutor
from tests.support.ray_cluster import make_ray_executor

ExecutorFactory = Callable[[pytest.FixtureRequest, pathlib.Path], Executor]

EXECUTORS: dict[str, ExecutorFactory] = {
    "local": lambda request, state_dir: LocalExecutor(
        {"num_cpus": 4, "start_timeout_s": 60}, state_dir
    ),
    "ssh": lambda request, state_dir: request.getfixturevalue("ssh_hosts").executor(state_dir),
    "ray": lambda request, state_dir: make_ray_executor(
        request.getfixturevalue("ray_cluster"), state_dir
    ),
}


@pytest.fixture(params=sorted(EXECUTORS))
def executor_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def state_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "state"


@pytest.fixture
async def make_executor(
    request: pytest.FixtureRequest, executor_name: str, state_dir: pathlib.Path
) -> AsyncIterator[Callable[[], Executor]]:
    """Makes executor instances on the test's state folder; at the end every
    replica still running is stopped and every instance closed."""
    made: list[Executor] = []

    def make() -> Executor:
        made.append(EXECUTORS[executor_name](request, state_dir))
        return made[-1]

    yield make
    if made:
        last = made[-1]
        for ref in await last.observe():
            await last.stop(ref, 5.0)
    for executor in made:
        await executor.close()
