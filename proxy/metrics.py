"""The proxy's Prometheus metrics, served at `/-/metrics`.

Counted per request on the hot path: requests by deployment, protocol and
status code, and their latency. A child metric per label set is looked up
once and kept, since `labels()` costs more than the increment itself.
Requests in flight and queued are read from the router when scraped, so they
cost the hot path nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from proxy.router import Router

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
# Seconds: from a fast in-process reply to a slow model call.
_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class ProxyMetrics:
    """One proxy's metrics, in a registry of their own (so that several
    proxies in one process, as in tests, do not collide)."""

    def __init__(self, router: Router) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            "capstan_proxy_requests", "Requests answered, by deployment, protocol and status.",
            ("deployment", "protocol", "code"), registry=self.registry,
        )  # fmt: skip
        self._latency = Histogram(
            "capstan_proxy_request_duration_seconds",
            "Time from a request's arrival to its response's first byte.",
            ("deployment", "protocol"), buckets=_LATENCY_BUCKETS_S, registry=self.registry,
        )  # fmt: skip
        self.registry.register(_RouterLoad(router))
        self._children: dict[tuple[str, str, str], tuple[object, object]] = {}

    def observe(self, deployment: str, protocol: str, code: str, latency_s: float) -> None:
        """Counts one answered request."""
        key = (deployment, protocol, code)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self._requests.labels(deployment, protocol, code),
                self._latency.labels(deployment, protocol),
            )
        children[0].inc()  # type: ignore[attr-defined]
        children[1].observe(latency_s)  # type: ignore[attr-defined]

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)


class _RouterLoad(Collector):
    """Requests in flight and queued per deployment, as the router has them now."""

    def __init__(self, router: Router) -> None:
        self._router = router

    def collect(self) -> Iterator[GaugeMetricFamily]:
        in_flight = GaugeMetricFamily(
            "capstan_proxy_requests_in_flight",
            "Requests sent to a replica and not yet answered.", labels=("deployment",),
        )  # fmt: skip
        queued = GaugeMetricFamily(
            "capstan_proxy_requests_queued",
            "Requests waiting for a replica with a free slot.", labels=("deployment",),
        )  # fmt: skip
        for name, (running, waiting) in self._router.load().items():
            in_flight.add_metric((name,), running)
            queued.add_metric((name,), waiting)
        yield in_flight
        yield queued
