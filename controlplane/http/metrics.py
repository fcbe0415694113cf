"""The control plane's Prometheus metrics, and its replicas', at /metrics.

Counted as they happen: reconcile-pass durations (the reconciler reports
each) and what the event log records (applies, finished and failed
rollouts, replica starts, stops and deaths), followed from the store so that
no writer needs to know about metrics. Read when scraped: replicas by
deployment and state from the store, and from every running replica its
ongoing requests and the metrics its user code defined.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from controlplane.reconciler.replica_client import ReplicaClient
from controlplane.records import ReplicaRecord, ReplicaState
from controlplane.store import Store

log = logging.getLogger(__name__)

# Events that count, and the counter each goes to.
_COUNTED = {
    "applied": "applies",
    "application_applied": "applies",
    "rolled_out": "rollouts_done",
    "deploy_failed": "rollouts_failed",
    "started": "replica_starts",
    "stopped": "replica_stops",
    "died": "replica_deaths",
}
_EVENT_POLL_S = 1.0
_REPLICA_TIMEOUT_S = 2.0


class ControlPlaneMetrics:
    """The registry behind the control plane's /metrics."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.registry = CollectorRegistry(auto_describe=True)
        self._counters = {
            "applies": _counter("applies", "Deployments and applications applied.", self.registry),
            "rollouts_done": _counter("rollouts_completed", "Versions rolled out.", self.registry),
            "rollouts_failed": _counter("rollouts_failed", "Rollouts that failed.", self.registry),
            "replica_starts": _counter("replica_starts", "Replicas started.", self.registry),
            "replica_stops": _counter("replica_stops", "Replicas stopped.", self.registry),
            "replica_deaths": _counter(
                "replica_deaths", "Replicas that died or failed health checks.", self.registry
            ),
        }
        self.reconcile_seconds = Histogram(
            "capstan_controlplane_reconcile_duration_seconds", "Time one reconcile pass takes.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )  # fmt: skip
        self._replicas: list[ReplicaRecord] = []
        self._scraped: list[Metric] = []
        self.registry.register(_Snapshot(self))

    async def follow_events(self) -> None:
        """Counts the events recorded from now on; run as a task."""
        cursor = await self._store.last_event_id()
        while True:
            await asyncio.sleep(_EVENT_POLL_S)
            try:
                events = await self._store.events_after(cursor, None, 10_000)
            except Exception:  # a busy or closing store: count on the next poll
                log.debug("metrics could not read events", exc_info=True)
                continue
            for event in events:
                cursor = event.id
                counter = _COUNTED.get(event.kind)
                if counter is not None:
                    self._counters[counter].labels(event.deployment).inc()

    async def exposition(self, replicas: ReplicaClient) -> bytes:
        """Reads the store and every running replica, then renders it all."""
        self._replicas = await self._store.replicas()
        running = [r for r in self._replicas if r.state == ReplicaState.RUNNING and r.ref]
        answers = await asyncio.gather(
            *(replicas.stats(r.ref, _REPLICA_TIMEOUT_S, with_metrics=True) for r in running),  # type: ignore[arg-type]
            return_exceptions=True,
        )
        self._scraped = list(_replica_metrics(running, answers))
        return generate_latest(self.registry)


def _counter(name: str, documentation: str, registry: CollectorRegistry) -> Counter:
    return Counter(f"capstan_controlplane_{name}", documentation, ("deployment",),
                   registry=registry)  # fmt: skip


class _Snapshot(Collector):
    """What the last scrape read: replicas by state, and the replicas' own."""

    def __init__(self, metrics: ControlPlaneMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "capstan_replicas", "Replicas by deployment and state.",
            labels=("deployment", "state"),
        )  # fmt: skip
        counts: dict[tuple[str, str], int] = {}
        for replica in self._metrics._replicas:
            key = (replica.deployment, replica.state.name)
            counts[key] = counts.get(key, 0) + 1
        for key, count in sorted(counts.items()):
            family.add_metric(key, count)
        yield family
        yield from self._metrics._scraped


def _replica_metrics(running: list[ReplicaRecord], answers: Iterable[object]) -> Iterator[Metric]:
    """Each replica's ongoing requests, and its user metrics merged by name
    (every replica describes the same families; Prometheus wants each once)."""
    ongoing = GaugeMetricFamily(
        "capstan_replica_ongoing_requests", "Requests queued and running on a replica.",
        labels=("deployment", "replica"),
    )  # fmt: skip
    merged: dict[str, Metric] = {}
    for replica, answer in zip(running, answers, strict=True):
        if isinstance(answer, BaseException):
            log.debug("replica %s did not answer for metrics: %s", replica.id, answer)
            continue
        ongoing.add_metric((replica.deployment, replica.id), answer.ongoing_requests)  # type: ignore[attr-defined]
        text = answer.metrics.decode(errors="replace")  # type: ignore[attr-defined]
        for family in text_string_to_metric_families(text):
            known = merged.setdefault(family.name, family)
            if known is not family:
                known.samples.extend(family.samples)
    yield ongoing
    yield from merged.values()
