"""Metrics user code defines, as Ray Serve's `ray.serve.metrics` allows:

    from capstan.serve import metrics
    requests = metrics.Counter("my_requests", description="...", tag_keys=("model",))
    requests.inc(tags={"model": "a"})

Every sample also carries the `deployment`, `application` and `replica` it
came from. The replica hands them to the control plane, whose metrics
endpoint shows every replica's (see GetStats `with_metrics`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import prometheus_client

from capstan.context import current_replica_context

# This process's user metrics (a replica is one process).
REGISTRY = prometheus_client.CollectorRegistry(auto_describe=True)
_WHERE = ("deployment", "application", "replica")


class _Metric:
    """Tags (labels) handling shared by the three kinds."""

    _kind: Any

    def __init__(
        self,
        name: str,
        description: str = "",
        tag_keys: Sequence[str] | None = None,
        **options: Any,
    ) -> None:
        self._tag_keys = tuple(tag_keys or ())
        clash = set(self._tag_keys) & set(_WHERE)
        if clash:
            raise ValueError(f"tag_keys {sorted(clash)} are set by Capstan; choose other names")
        self._default_tags: dict[str, str] = {}
        self._metric = self._kind(
            name, description or name, (*self._tag_keys, *_WHERE), registry=REGISTRY, **options
        )

    def set_default_tags(self, default_tags: Mapping[str, str]) -> None:
        """Tags used when a call does not give them."""
        self._check_keys(default_tags)
        self._default_tags = dict(default_tags)

    def _child(self, tags: Mapping[str, str] | None) -> Any:
        values = {**self._default_tags, **(tags or {})}
        self._check_keys(values)
        missing = [key for key in self._tag_keys if key not in values]
        if missing:
            raise ValueError(f"missing values for tag_keys {missing}")
        context = current_replica_context()
        where = (
            (context.deployment, context.app_name, context.replica_tag) if context else ("", "", "")
        )
        return self._metric.labels(*(str(values[k]) for k in self._tag_keys), *where)

    def _check_keys(self, tags: Mapping[str, str]) -> None:
        unknown = set(tags) - set(self._tag_keys)
        if unknown:
            raise ValueError(f"tags {sorted(unknown)} are not among tag_keys {self._tag_keys}")


class Counter(_Metric):
    """A count that only goes up. Exported as `<name>_total`."""

    _kind = prometheus_client.Counter

    def inc(self, value: float = 1.0, tags: Mapping[str, str] | None = None) -> None:
        if value <= 0:
            raise ValueError(f"a Counter only goes up; got inc({value})")
        self._child(tags).inc(value)


class Gauge(_Metric):
    """A value that goes up and down."""

    _kind = prometheus_client.Gauge

    def set(self, value: float, tags: Mapping[str, str] | None = None) -> None:
        self._child(tags).set(value)


class Histogram(_Metric):
    """Observations counted into buckets with upper `boundaries`."""

    _kind = prometheus_client.Histogram

    def __init__(
        self,
        name: str,
        description: str = "",
        boundaries: Sequence[float] | None = None,
        tag_keys: Sequence[str] | None = None,
    ) -> None:
        options = {"buckets": tuple(boundaries)} if boundaries else {}
        super().__init__(name, description, tag_keys, **options)

    def observe(self, value: float, tags: Mapping[str, str] | None = None) -> None:
        self._child(tags).observe(value)


def exposition() -> bytes:
    """This process's user metrics in Prometheus' text format."""
    return prometheus_client.generate_latest(REGISTRY)
