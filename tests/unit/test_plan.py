"""The planner, as tables: desired + observed -> actions. Each action is
summarised as ("start", replica_id or None), ("stop", id, drained?) or
("reconfigure", id), compared as a multiset."""

from __future__ import annotations

import dataclasses

import pytest

from controlplane.reconciler.plan import (
    Action,
    Desired,
    Observed,
    ReconfigureReplica,
    StartReplica,
    StopReplica,
    plan,
)
from controlplane.records import ReplicaState

PENDING, STARTING, RUNNING = ReplicaState.PENDING, ReplicaState.STARTING, ReplicaState.RUNNING
DRAINING, STOPPING = ReplicaState.DRAINING, ReplicaState.STOPPING


def want(target: int = 1, version: str = "v1", **kw: object) -> Desired:
    fields = {"name": "d", "version": version, "code_hash": "h", "target": target} | kw
    return Desired(**fields)  # type: ignore[arg-type]


def rep(id: str, state: ReplicaState = RUNNING, version: str = "v1", **kw: object) -> Observed:
    fields = {"id": id, "deployment": "d", "version": version, "code_hash": "h", "state": state}
    return Observed(**(fields | kw))  # type: ignore[arg-type]


def summary(actions: list[Action]) -> list[tuple]:
    out: list[tuple] = []
    for a in actions:
        if isinstance(a, StartReplica):
            out.append(("start", a.replica_id))
        elif isinstance(a, StopReplica):
            out.append(("stop", a.replica_id, a.drain))
        else:
            out.append(("reconfigure", a.replica_id))
    return sorted(out, key=repr)


START = ("start", None)


CASES = [
    # -- same version: scale, no restarts --------------------------------------
    ("new deployment starts all", want(3), [], [START] * 3),
    ("steady state does nothing", want(2), [rep("a"), rep("b")], []),
    ("scale up adds the missing", want(3), [rep("a")], [START] * 2),
    ("scale down stops running", want(1), [rep("a"), rep("b")], [("stop", "a", True)]),
    (
        "scale down prefers pending then starting (Ray #43034)",
        want(1),
        [rep("a"), rep("b", STARTING), rep("c", PENDING)],
        [("stop", "b", False), ("stop", "c", False)],
    ),
    (
        "scale to zero stops everything",
        want(0),
        [rep("a"), rep("b", STARTING)],
        [("stop", "a", True), ("stop", "b", False)],
    ),
    (
        "pending replica is retried under its own id",
        want(2),
        [rep("a"), rep("b", PENDING)],
        [("start", "b")],
    ),
    ("starting replica is waited for", want(2), [rep("a"), rep("b", STARTING)], []),
    (
        "draining and stopping replicas do not count",
        want(2),
        [rep("a"), rep("x", DRAINING), rep("y", STOPPING)],
        [START],
    ),
    ("no starts while backing off", want(3, may_start=False), [rep("a")], []),
    (
        "backing off still scales down",
        want(1, may_start=False),
        [rep("a"), rep("b")],
        [("stop", "a", True)],
    ),
    # -- in-place updates ----------------------------------------------------
    (
        "changed user_config reconfigures running replicas",
        want(2, user_config='{"x": 2}'),
        [
            rep("a", user_config='{"x": 1}'),
            rep("b", user_config='{"x": 1}'),
            rep("c", STARTING, user_config='{"x": 1}'),
        ],
        [("reconfigure", "a"), ("reconfigure", "b"), ("stop", "c", False)],
    ),
    (
        "changed max_concurrent_queries reconfigures",
        want(1, max_concurrent_queries=5),
        [rep("a")],
        [("reconfigure", "a")],
    ),
    (
        "busy replica is not reconfigured twice",
        want(1, user_config="2"),
        [rep("a", user_config="1", is_busy=True)],
        [],
    ),
    (
        "no user_config wanted leaves the replica's",
        want(1, user_config=None),
        [rep("a", user_config="1")],
        [],
    ),
    # -- rolling updates, surge first ------------------------------------------
    ("1 replica: start the new one first", want(1, "v2"), [rep("a")], [START]),
    (
        "1 replica: old serves while new starts",
        want(1, "v2"),
        [rep("a"), rep("n", STARTING, "v2")],
        [],
    ),
    (
        "1 replica: old drains once new runs",
        want(1, "v2"),
        [rep("a"), rep("n", RUNNING, "v2")],
        [("stop", "a", True)],
    ),
    (
        "5 replicas: one new at a time (20%, at least 1)",
        want(5, "v2"),
        [rep(x) for x in "abcde"],
        [START],
    ),
    (
        "5 replicas: new running -> one old drains, next new starts",
        want(5, "v2"),
        [*(rep(x) for x in "abcde"), rep("n", RUNNING, "v2")],
        [("stop", "a", True), START],
    ),
    (
        "5 replicas: budget used while a new one starts",
        want(5, "v2"),
        [*(rep(x) for x in "bcde"), rep("n", RUNNING, "v2"), rep("m", STARTING, "v2")],
        [],
    ),
    (
        "10 replicas: two at a time",
        want(10, "v2"),
        [rep(f"r{i}") for i in range(10)],
        [START] * 2,
    ),
    (
        "code change under the same version rolls too",
        want(1),
        [rep("a", code_hash="other")],
        [START],
    ),
    (
        "old replicas not serving yet are dropped at once",
        want(2, "v2"),
        [rep("a"), rep("b", STARTING), rep("c", PENDING)],
        [("stop", "b", False), ("stop", "c", False), START],
    ),
    (
        "scale down during a rollout stops old ones first",
        want(3, "v2"),
        [rep(x) for x in "abcde"],
        [("stop", "a", True), ("stop", "b", True), START],
    ),
    (
        "scale up during a rollout fills the gap at once",
        want(5, "v2"),
        [rep(x) for x in "abc"],
        [START] * 2,
    ),
    (
        "a new replica that fits nowhere makes an old one go",
        want(2, "v2"),
        [rep("a"), rep("b"), rep("n", PENDING, "v2", is_unplaceable=True)],
        [("stop", "a", True), ("start", "n")],
    ),
    (
        "... but only once while that old one is still leaving",
        want(2, "v2"),
        [rep("b"), rep("x", DRAINING), rep("n", PENDING, "v2", is_unplaceable=True)],
        [("start", "n")],
    ),
    # -- failures and deletion -------------------------------------------------
    (
        "unhealthy replica is replaced",
        want(2),
        [rep("a"), rep("b", is_healthy=False)],
        [("stop", "b", True), START],
    ),
    (
        "unhealthy old replica during a rollout is not replaced by an old one",
        want(2, "v2"),
        [rep("a"), rep("b", is_healthy=False)],
        [("stop", "b", True), START],
    ),
]


@pytest.mark.parametrize(
    ("desired", "observed", "expected"),
    [pytest.param(d, o, e, id=name) for name, d, o, e in CASES],
)
def test_plan(desired: Desired, observed: list[Observed], expected: list[tuple]) -> None:
    assert summary(plan([desired], observed)) == sorted(expected, key=repr)


def test_replicas_of_unknown_deployments_are_stopped() -> None:
    observed = [
        rep("a", deployment="gone"),
        rep("b", STARTING, deployment="gone"),
        rep("c", DRAINING, deployment="gone"),
    ]
    assert summary(plan([], observed)) == [("stop", "a", True), ("stop", "b", False)]


def test_deployments_are_planned_independently() -> None:
    other = dataclasses.replace(want(1), name="e")
    actions = plan([want(1), other], [rep("a")])
    assert [(type(a).__name__, a.deployment) for a in actions] == [("StartReplica", "e")]


def test_actions_say_why() -> None:
    [action] = plan([want(1, "v2")], [rep("a")])
    assert isinstance(action, StartReplica)
    assert action.reason == "roll out v2"
    assert (action.version, action.code_hash) == ("v2", "h")


def test_reconfigure_carries_the_desired_config() -> None:
    [action] = plan([want(1, user_config="2", max_concurrent_queries=7)], [rep("a")])
    assert action == ReconfigureReplica("a", "d", "2", 7, action.reason)


@pytest.mark.parametrize(
    ("target", "budget"), [(0, 1), (1, 1), (4, 1), (5, 1), (9, 1), (10, 2), (15, 3), (100, 20)]
)
def test_rollout_budget(target: int, budget: int) -> None:
    assert want(target).rollout_budget == budget


@pytest.mark.parametrize("target", [1, 2, 3, 5, 8, 10, 23])
def test_rolling_update_never_drops_below_target(target: int) -> None:
    """Simulates a rollout step by step: started replicas run one step later,
    stopped ones vanish. At every step at least `target` replicas serve and
    at most the budget of new ones are starting; it ends with only new ones."""
    replicas = {f"old{i}": rep(f"old{i}") for i in range(target)}
    desired = want(target, "v2")
    for step in range(10 * target + 10):
        actions = plan([desired], list(replicas.values()))
        if not actions and all(r.version == "v2" for r in replicas.values()):
            break
        replicas = _step(replicas, actions, step)
        serving = sum(1 for r in replicas.values() if r.state == RUNNING)
        starting = sum(1 for r in replicas.values() if r.state != RUNNING)
        assert serving >= target, f"step {step}: only {serving} serving"
        assert starting <= desired.rollout_budget
    else:
        pytest.fail("the rollout did not finish")
    assert sorted(r.version for r in replicas.values()) == ["v2"] * target


def _step(replicas: dict[str, Observed], actions: list[Action], step: int) -> dict[str, Observed]:
    # Replicas started in an earlier step are RUNNING now.
    after = {k: dataclasses.replace(r, state=RUNNING) for k, r in replicas.items()}
    for i, action in enumerate(actions):
        if isinstance(action, StartReplica):
            new_id = f"new{step}-{i}"
            after[new_id] = rep(new_id, STARTING, action.version)
        elif isinstance(action, StopReplica):
            del after[action.replica_id]
    return after
