"""Per-deployment traffic over the last minutes, for the dashboard: request
rate, error rate and latency quantiles, computed from periodic scrapes of
the proxy's /-/metrics (the control plane is never on a request's path, so
it learns about requests the way Prometheus does).

`Sample` and `rates` are pure; `TrafficHistory` keeps the samples and does
the scraping.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import math
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger(__name__)

SCRAPE_PERIOD_S = 5.0
KEEP_S = 15 * 60.0


@dataclasses.dataclass(frozen=True)
class Sample:
    """Cumulative counts for one deployment at one scrape."""

    requests: float = 0.0
    errors: float = 0.0
    # Cumulative histogram: (upper bound in seconds, count), ascending.
    buckets: tuple[tuple[float, float], ...] = ()


@dataclasses.dataclass(frozen=True)
class Point:
    """Traffic between two scrapes."""

    time_s: float
    requests_per_s: float
    error_ratio: float
    p50_s: float | None
    p99_s: float | None


def parse(text: str) -> dict[str, Sample]:
    """The proxy's exposition, summed per deployment over protocols."""
    requests: dict[str, float] = collections.defaultdict(float)
    errors: dict[str, float] = collections.defaultdict(float)
    buckets: dict[str, dict[float, float]] = collections.defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            deployment = sample.labels.get("deployment", "")
            if sample.name == "capstan_proxy_requests_total":
                requests[deployment] += sample.value
                if _is_error(sample.labels.get("code", "")):
                    errors[deployment] += sample.value
            elif sample.name == "capstan_proxy_request_duration_seconds_bucket":
                bound = float(sample.labels["le"])
                counts = buckets[deployment]
                counts[bound] = counts.get(bound, 0.0) + sample.value
    return {
        name: Sample(requests[name], errors[name], tuple(sorted(buckets[name].items())))
        for name in requests
    }


def point(before: Sample, after: Sample, elapsed_s: float, time_s: float) -> Point:
    """The traffic between two samples of one deployment."""
    done = max(0.0, after.requests - before.requests)
    errors = max(0.0, after.errors - before.errors)
    earlier = dict(before.buckets)
    window = [(bound, count - earlier.get(bound, 0.0)) for bound, count in after.buckets]
    return Point(
        time_s=time_s,
        requests_per_s=done / elapsed_s if elapsed_s > 0 else 0.0,
        error_ratio=errors / done if done else 0.0,
        p50_s=quantile(window, 0.5),
        p99_s=quantile(window, 0.99),
    )


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """As PromQL's histogram_quantile: linear within the bucket that holds
    the q-th observation; None without observations."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower
            share = (rank - below) / (count - below) if count > below else 1.0
            return lower + (bound - lower) * share
        lower, below = bound, count
    return lower


class TrafficHistory:
    """Scrapes the proxy every SCRAPE_PERIOD_S and keeps KEEP_S of points."""

    def __init__(self, proxy_url: str) -> None:
        self._url = proxy_url.rstrip("/") + "/-/metrics"
        self._last: tuple[float, dict[str, Sample]] | None = None
        self.points: dict[str, collections.deque[Point]] = {}

    async def run(self) -> None:
        while True:
            try:
                text = await asyncio.to_thread(_fetch, self._url)
            except OSError as error:
                log.debug("cannot scrape %s: %s", self._url, error)
            else:
                self.add(time.time(), parse(text))
            await asyncio.sleep(SCRAPE_PERIOD_S)

    def add(self, now_s: float, samples: dict[str, Sample]) -> None:
        """Records one scrape."""
        if self._last is not None:
            then_s, before = self._last
            for name, after in samples.items():
                points = self.points.setdefault(
                    name, collections.deque(maxlen=int(KEEP_S / SCRAPE_PERIOD_S))
                )
                points.append(point(before.get(name, Sample()), after, now_s - then_s, now_s))
        self._last = (now_s, samples)


# Status codes that mean the server side failed (a 4xx is the caller's).
_GRPC_ERRORS = frozenset(
    {"INTERNAL", "UNAVAILABLE", "UNKNOWN", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"}
)


def _is_error(code: str) -> bool:
    return code.startswith("5") or code in _GRPC_ERRORS


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2.0) as response:
        return response.read().decode()
