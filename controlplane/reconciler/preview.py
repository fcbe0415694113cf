"""What a rollout would look like, without doing it: the pure planner run
pass after pass on a copy of the replicas, each start placed by the pure
scheduler on a copy of the capacity, each started replica taken to come up
before the next pass. Pure, like the planner it runs: `capstan deploy
--dry-run` and the reconciler cannot disagree on the rule, only on timing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from controlplane.reconciler.plan import (
    Desired,
    Observed,
    ReconfigureReplica,
    StartReplica,
    StopReplica,
    plan,
)
from controlplane.records import ReplicaState
from controlplane.scheduler import NoFit, Placement

# A rollout of any size the store accepts ends well before this many passes;
# a simulation that does not has a replica that can never start.
_MAX_PASSES = 500

# Places one replica given what is already held, or says why it cannot.
Placer = Callable[[Sequence[Placement]], Placement | NoFit]


@dataclasses.dataclass(frozen=True)
class Step:
    """One pass of the rollout: what it starts, stops and reconfigures, and
    how many RUNNING replicas serve while it runs."""

    started: int
    stopped: int
    reconfigured: int
    serving: int


@dataclasses.dataclass(frozen=True)
class Preview:
    """The passes a change takes; `restarts` counts replicas of other code
    replaced; `blocked` says why a replica would wait for capacity."""

    steps: tuple[Step, ...]
    restarts: int
    is_surge: bool
    blocked: str = ""


def preview(
    want: Desired,
    replicas: Sequence[Observed],
    placements: dict[str, Placement],
    others: Sequence[Placement],
    place: Placer,
) -> Preview:
    """Runs the planner on `replicas` (with their `placements`) until it asks
    for nothing more. `others` is what other deployments hold on the same
    executor; `place` is the scheduler bound to the executor's nodes."""
    live = {r.id: r for r in replicas if r.state in _LIVE}
    held = {rid: p for rid, p in placements.items() if rid in live}
    steps: list[Step] = []
    restarts, is_surge, fresh = 0, False, 0
    reasons: dict[str, str] = {}  # why a replica could not be placed
    for _ in range(_MAX_PASSES):
        actions = plan([want], list(live.values()))
        if not actions:
            break
        started = stopped = reconfigured = waiting = 0
        serving = sum(1 for r in live.values() if r.state == ReplicaState.RUNNING)
        for action in sorted(actions, key=lambda a: not isinstance(a, StopReplica)):
            if isinstance(action, StopReplica):
                gone = live.pop(action.replica_id)
                held.pop(action.replica_id, None)
                restarts += not _is_current(gone, want)
                stopped += 1
            elif isinstance(action, ReconfigureReplica):
                live[action.replica_id] = dataclasses.replace(
                    live[action.replica_id],
                    user_config=action.user_config,
                    max_concurrent_queries=action.max_concurrent_queries,
                )
                reconfigured += 1
            else:
                fresh += 1
                where = place([*others, *held.values()])
                replica = _started(action, want, f"new-{fresh}", where)
                live[replica.id] = replica
                if isinstance(where, NoFit):
                    reasons[replica.id] = where.reason
                    waiting += action.replica_id is None  # new, so the next pass differs
                else:
                    held[replica.id] = where
                    started += 1
        if not (started or stopped or reconfigured or waiting):
            break  # only replicas that cannot be placed are left to retry
        if not steps and started and not stopped:
            is_surge = any(not _is_current(r, want) for r in live.values())
        if started or stopped or reconfigured:
            steps.append(Step(started, stopped, reconfigured, serving))
        live = {rid: _come_up(r) for rid, r in live.items()}
    waiting = [reasons[r.id] for r in live.values() if r.is_unplaceable]
    return Preview(tuple(steps), restarts, is_surge, waiting[-1] if waiting else "")


_LIVE = (ReplicaState.PENDING, ReplicaState.STARTING, ReplicaState.RUNNING)


def _is_current(replica: Observed, want: Desired) -> bool:
    return replica.version == want.version and replica.code_hash == want.code_hash


def _started(
    action: StartReplica, want: Desired, new_id: str, where: Placement | NoFit
) -> Observed:
    """The replica a start makes: STARTING when placed, else PENDING."""
    fits = not isinstance(where, NoFit)
    return Observed(
        id=action.replica_id or new_id,
        deployment=want.name,
        version=want.version,
        code_hash=want.code_hash,
        state=ReplicaState.STARTING if fits else ReplicaState.PENDING,
        user_config=want.user_config,
        max_concurrent_queries=want.max_concurrent_queries,
        is_unplaceable=not fits,
    )


def _come_up(replica: Observed) -> Observed:
    if replica.state != ReplicaState.STARTING:
        return replica
    return dataclasses.replace(replica, state=ReplicaState.RUNNING)
