"""Planning: desired deployments + observed replicas -> actions. Pure: no I/O,
no clock, no environment, so every rule here is tested with tables.

Rules (Ray Serve's, with its known problems fixed):
- Same version and code: never restart. Scale to the target; a changed
  user_config or max_concurrent_queries is applied in place (Reconfigure).
- New version: rolling update, surge first. A new replica is started before
  an old one is drained, so a one-replica deployment never drops to zero; at
  most max(1, floor(0.2 * target)) new replicas are starting at once. Old
  replicas stay routable until replacements are RUNNING. If a new replica
  cannot be placed for lack of capacity, old ones make room instead.
- Scale down stops PENDING before STARTING before RUNNING (Ray #43034), and
  old versions before the new one.
- Unhealthy replicas are stopped and replaced; a deployment that is gone (or
  being deleted) has all its replicas stopped.
- One pass hands out a bounded number of actions (a `Budget`): a scale-up to
  a thousand replicas proceeds over many passes, each short, so the control
  plane keeps answering meanwhile. The next pass plans again from what it
  observes, so what was left out is simply planned again.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence

from controlplane.records import ReplicaState

_LIVE = (ReplicaState.PENDING, ReplicaState.STARTING, ReplicaState.RUNNING)
# Scale-down victims first: what serves nothing yet goes before what serves.
_STOP_ORDER = {ReplicaState.PENDING: 0, ReplicaState.STARTING: 1, ReplicaState.RUNNING: 2}


@dataclasses.dataclass(frozen=True)
class Desired:
    """What one deployment should look like now."""

    name: str
    version: str
    code_hash: str
    target: int
    user_config: str | None = None
    max_concurrent_queries: int = 100
    # False while start failures back off, or after a failed first rollout.
    may_start: bool = True
    rollout_fraction: float = 0.2

    @property
    def rollout_budget(self) -> int:
        """New replicas that may be starting at once during a rolling update."""
        return max(1, math.floor(self.rollout_fraction * self.target))


@dataclasses.dataclass(frozen=True)
class Observed:
    """One replica as the control plane knows it."""

    id: str
    deployment: str
    version: str
    code_hash: str
    state: ReplicaState
    user_config: str | None = None
    max_concurrent_queries: int = 100
    is_healthy: bool = True
    # A Reconfigure is in flight: count it, but leave it alone.
    is_busy: bool = False
    # PENDING because no node has room for it.
    is_unplaceable: bool = False
    # Why it is in its state (a placement failure, say), for status.
    message: str = ""


@dataclasses.dataclass(frozen=True)
class StartReplica:
    """Start a replica of the deployment's desired version. `replica_id` is a
    PENDING replica to try again; None asks for a new one."""

    deployment: str
    version: str
    code_hash: str
    reason: str
    replica_id: str | None = None


@dataclasses.dataclass(frozen=True)
class StopReplica:
    """Stop a replica; a RUNNING one is first taken off the route table and
    drained when `drain` is set."""

    replica_id: str
    deployment: str
    reason: str
    drain: bool = True


@dataclasses.dataclass(frozen=True)
class ReconfigureReplica:
    """Apply user_config / max_concurrent_queries in place, no restart.
    `user_config` None leaves the replica's current one."""

    replica_id: str
    deployment: str
    user_config: str | None
    max_concurrent_queries: int
    reason: str


Action = StartReplica | StopReplica | ReconfigureReplica


@dataclasses.dataclass(frozen=True)
class Budget:
    """What one pass may hand out. `starts` bounds the replicas starting at
    once (those still STARTING count against it); `stops` bounds the stops
    (and in-place reconfigures) of one pass."""

    starts: int
    stops: int


def plan(
    desired: Sequence[Desired], observed: Sequence[Observed], budget: Budget | None = None
) -> list[Action]:
    """The actions that move `observed` towards `desired`, for this pass,
    within `budget` (None: no bound). Replicas of deployments missing from
    `desired` are all stopped."""
    by_deployment: dict[str, list[Observed]] = defaultdict(list)
    for replica in observed:
        by_deployment[replica.deployment].append(replica)
    # Never more starts than the budget, even planned: 10**5 missing replicas
    # must not become 10**5 objects.
    most_starts = math.inf if budget is None else budget.starts
    actions: list[Action] = []
    for want in desired:
        actions += _plan_deployment(want, by_deployment.pop(want.name, []), most_starts)
    for name, replicas in sorted(by_deployment.items()):
        live = [r for r in replicas if r.state in _LIVE and not r.is_busy]
        actions += _stop(live, len(live), f"deployment {name} is gone")
    return actions if budget is None else within(actions, observed, budget)


def within(actions: Sequence[Action], observed: Sequence[Observed], budget: Budget) -> list[Action]:
    """The first actions that fit `budget`, in planned order (which puts the
    urgent ones first: sick replicas, then old ones, then scaling)."""
    starting = sum(1 for r in observed if r.state == ReplicaState.STARTING)
    starts, stops = max(0, budget.starts - starting), budget.stops
    kept: list[Action] = []
    for action in actions:
        if isinstance(action, StartReplica):
            if starts <= 0:
                continue
            starts -= 1
        else:
            if stops <= 0:
                continue
            stops -= 1
        kept.append(action)
    return kept


def _plan_deployment(
    want: Desired, replicas: list[Observed], most_starts: float = math.inf
) -> list[Action]:
    live = [r for r in replicas if r.state in _LIVE]
    sick = [r for r in live if not r.is_healthy and not r.is_busy]
    healthy = [r for r in live if r.is_healthy]
    current = [r for r in healthy if is_current(r, want)]
    old = [r for r in healthy if not is_current(r, want)]
    # Old replicas that serve nothing yet cost nothing to drop.
    old_idle = [r for r in old if r.state != ReplicaState.RUNNING and not r.is_busy]
    old_running = [r for r in old if r.state == ReplicaState.RUNNING]
    leaving = sum(1 for r in replicas if r.state not in _LIVE)

    actions: list[Action] = _stop(sick, len(sick), "failed its health checks", drain=True)
    actions += _stop(old_idle, len(old_idle), f"superseded by version {want.version}")
    old_stops = _old_to_stop(want, current, old_running, leaving)
    actions += _stop(old_running, old_stops, f"rolling update to version {want.version}")
    old_left = len(old_running) - old_stops
    scale_down = _stop(current, len(current) - want.target, f"scale down to {want.target}")
    stopped = {action.replica_id for action in scale_down}
    kept = [r for r in current if r.id not in stopped]
    actions += scale_down
    actions += _starts(want, kept, old_left, most_starts)
    actions += _reconfigures(want, kept)
    return actions


def is_current(replica: Observed, want: Desired) -> bool:
    """The replica runs the desired code (its config may still differ)."""
    return replica.version == want.version and replica.code_hash == want.code_hash


def is_configured(replica: Observed, want: Desired) -> bool:
    """The replica runs the desired user_config and limits."""
    config_differs = want.user_config is not None and replica.user_config != want.user_config
    return not config_differs and replica.max_concurrent_queries == want.max_concurrent_queries


def _old_to_stop(
    want: Desired, current: list[Observed], old_running: list[Observed], leaving: int
) -> int:
    """Old RUNNING replicas to drain now: one per new replica RUNNING beyond
    the target, plus room for new replicas that cannot be placed (minus what
    is already on its way out and will free its resources)."""
    new_running = sum(1 for r in current if r.state == ReplicaState.RUNNING)
    surplus = len(old_running) + new_running - want.target
    blocked = sum(1 for r in current if r.is_unplaceable)
    make_room = min(blocked, want.rollout_budget) - leaving
    stoppable = sum(1 for r in old_running if not r.is_busy)
    return max(0, min(stoppable, max(surplus, make_room)))


def _starts(
    want: Desired, current: list[Observed], old_left: int, most: float = math.inf
) -> list[Action]:
    if not want.may_start:
        return []
    reason = f"scale up to {want.target}" if not old_left else f"roll out {want.version}"
    actions: list[Action] = [
        StartReplica(want.name, want.version, want.code_hash, f"retry: {reason}", r.id)
        for r in current
        if r.state == ReplicaState.PENDING
    ]
    missing = want.target - len(current)
    if missing <= 0:
        return actions
    if old_left:
        starting = sum(1 for r in current if r.state != ReplicaState.RUNNING)
        below_target = want.target - old_left - len(current)
        missing = min(missing, max(below_target, want.rollout_budget - starting))
    missing = int(min(missing, most))
    actions += [
        StartReplica(want.name, want.version, want.code_hash, reason) for _ in range(missing)
    ]
    return actions


def _stop(
    candidates: Iterable[Observed], count: int, reason: str, *, drain: bool = True
) -> list[Action]:
    if count <= 0:
        return []
    ordered = sorted(
        (r for r in candidates if not r.is_busy), key=lambda r: (_STOP_ORDER[r.state], r.id)
    )
    return [
        StopReplica(r.id, r.deployment, reason, drain=drain and r.state == ReplicaState.RUNNING)
        for r in ordered[:count]
    ]


def _reconfigures(want: Desired, current: list[Observed]) -> list[Action]:
    actions: list[Action] = []
    for r in current:
        if r.state != ReplicaState.RUNNING or r.is_busy:
            continue
        if not is_configured(r, want):
            actions.append(
                ReconfigureReplica(
                    r.id, r.deployment, want.user_config, want.max_concurrent_queries,
                    "user_config or max_concurrent_queries changed",
                )
            )  # fmt: skip
    return actions
