"""Fixtures for the replica worker's tests: real worker processes started by
the local executor (one executor per test module), user code from tests/apps."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from executors.base import ReplicaRef
from executors.local import LocalExecutor
from tests.contract.specs import launch_spec

Launch = Callable[..., Awaitable[ReplicaRef]]


@pytest.fixture(scope="module")
async def executor(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalExecutor]:
    executor = LocalExecutor({"num_cpus": 8}, tmp_path_factory.mktemp("replicas"))
    yield executor
    for ref in await executor.observe():
        await executor.stop(ref, 5.0)
    await executor.close()


@pytest.fixture(scope="module")
def launch(executor: LocalExecutor) -> Launch:
    async def launch(import_path: str, **options: Any) -> ReplicaRef:
        return await executor.launch(launch_spec(import_path, **options))

    return launch
