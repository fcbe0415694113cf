"""Which replicas DescribeDeployment asks, and in what order."""

from __future__ import annotations

import pytest

from controlplane.describing import describers
from controlplane.records import ReplicaRecord, ReplicaState
from executors.base import ReplicaRef


def _replica(replica_id: str, version: str, state: ReplicaState, *, placed: bool = True):
    ref = ReplicaRef(replica_id, "local", f"127.0.0.1:1/{replica_id}") if placed else None
    return ReplicaRecord(replica_id, "d", version, "h", state, "local", ref=ref)


RUNNING, STARTING, DRAINING = ReplicaState.RUNNING, ReplicaState.STARTING, ReplicaState.DRAINING


@pytest.mark.parametrize(
    ("replicas", "expected"),
    [
        ([], []),
        # Only running replicas answer for the code.
        ([_replica("a", "v2", STARTING), _replica("b", "v2", DRAINING)], []),
        ([_replica("a", "v2", RUNNING, placed=False)], []),
        # The version in force first, then the old one, each in stored order.
        (
            [
                _replica("old", "v1", RUNNING),
                _replica("new", "v2", RUNNING),
                _replica("new2", "v2", RUNNING),
            ],
            ["new", "new2", "old"],
        ),
    ],
)
def test_describers(replicas: list[ReplicaRecord], expected: list[str]) -> None:
    assert [ref.replica_id for ref in describers("v2", replicas)] == expected
