"""The rollout preview, as tables: the planner run pass after pass on a
copy of the replicas, starts placed by the scheduler on a copy of the nodes."""

from __future__ import annotations

import pytest

from controlplane.reconciler.plan import Desired, Observed
from controlplane.reconciler.preview import Step, preview
from controlplane.records import ReplicaState
from controlplane.scheduler import Placement, place
from executors.base import Node
from executors.options import ReplicaOptions

RUNNING = ReplicaState.RUNNING


def want(target: int, version: str = "v2", user_config: str | None = None) -> Desired:
    return Desired("d", version, "h", target, user_config=user_config)


def running(count: int, version: str = "v1") -> tuple[list[Observed], dict[str, Placement]]:
    replicas = [
        Observed(f"r{i}", "d", version, "h", RUNNING, user_config="1") for i in range(count)
    ]
    return replicas, {r.id: Placement("n", num_cpus=1) for r in replicas}


def on(cpus: float):
    nodes = [Node("n", cpus)]
    return lambda used: place(ReplicaOptions(num_cpus=1), nodes, used)


CASES = [
    # name, desired, replicas now, node CPUs, steps, restarts, surge
    ("create", want(3), 0, 8, [Step(3, 0, 0, 0)], 0, False),
    ("nothing to do", want(2, "v1"), 2, 8, [], 0, False),
    ("scale up in place", want(3, "v1"), 2, 8, [Step(1, 0, 0, 2)], 0, False),
    ("scale down in place", want(1, "v1"), 2, 8, [Step(0, 1, 0, 2)], 0, False),
    (
        "reconfigure in place",
        want(2, "v1", user_config="2"),
        2, 8, [Step(0, 0, 2, 2)], 0, False,
    ),
    (
        "rolling update with room: new before old, never below 2 serving",
        want(2),
        2, 8, [Step(1, 0, 0, 2), Step(1, 1, 0, 3), Step(0, 1, 0, 3)], 2, True,
    ),
    (
        "rolling update with no room: old drained first",
        want(2),
        2, 2, [Step(1, 1, 0, 2), Step(1, 1, 0, 2)], 2, False,
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("desired", "count", "cpus", "steps", "restarts", "surge"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_preview(desired, count, cpus, steps, restarts, surge) -> None:
    replicas, placements = running(count)
    shown = preview(desired, replicas, placements, [], on(cpus))
    assert list(shown.steps) == steps
    assert (shown.restarts, shown.is_surge, shown.blocked) == (restarts, surge, "")


def test_a_replica_that_does_not_fit_is_named() -> None:
    replicas, placements = running(0)
    others = [Placement("n", num_cpus=2)]  # another deployment holds the node
    shown = preview(want(1), replicas, placements, others, on(2))
    assert shown.steps == ()
    assert shown.blocked == "needs 1 CPU, n has 0 free"
