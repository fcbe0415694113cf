"""What the control plane concludes from the store after a restart and from
what executors report on each pass. Pure.

Adoption: a stored replica its executor still runs is kept; a RUNNING one it
no longer runs is dead (replaced by the planner); one it runs that the store
does not know is stopped. A replica stored STARTING has no stored address
(its launch was in flight when the previous control plane stopped): it is
forgotten, and stopped once its executor reports it as unknown.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping, Sequence

from controlplane.reconciler.lifecycle import Phase, Replica
from controlplane.records import ReplicaRecord, ReplicaState
from executors.base import ReplicaRef


@dataclasses.dataclass(frozen=True)
class Observation:
    """What one executor reported, and when (monotonic seconds) it was asked."""

    asked_mono_s: float
    refs: Mapping[str, ReplicaRef]


def adopt(stored: Iterable[ReplicaRecord]) -> tuple[list[Replica], list[ReplicaRecord]]:
    """The stored replicas to keep, and those to forget."""
    kept, forgotten = [], []
    for record in stored:
        if record.state == ReplicaState.STARTING:
            forgotten.append(record)
        else:
            kept.append(Replica.adopted(record))
    return kept, forgotten


def dead(
    replicas: Iterable[Replica], observations: Mapping[str, Observation | None]
) -> list[Replica]:
    """Stored-RUNNING replicas that an observation begun after their ref was
    stored did not report. A failed observation (None) judges nobody."""
    found = []
    for replica in replicas:
        seen = observations.get(replica.record.executor)
        if seen is None or replica.record.state != ReplicaState.RUNNING:
            continue
        if replica.ref_since_mono_s < seen.asked_mono_s and replica.id not in seen.refs:
            found.append(replica)
    return found


def unknown(
    known: Collection[str], observations: Mapping[str, Observation | None]
) -> list[tuple[str, ReplicaRef]]:
    """(executor, ref) of every replica an executor runs that is not known."""
    return [
        (executor, ref)
        for executor, seen in observations.items()
        for replica_id, ref in (seen.refs if seen else {}).items()
        if replica_id not in known
    ]


def unfinished_stops(replicas: Sequence[Replica]) -> list[Replica]:
    """Replicas left draining or stopping with no task stopping them."""
    return [replica for replica in replicas if replica.phase == Phase.STALLED]
