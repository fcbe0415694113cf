"""What the proxy notes about each request it answers: metrics always, and
a line in the access log when one is configured. HTTP and the gRPC DataPlane
report through the same `done`."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

from capstan.errors import CapstanError
from proxy.access_log import AccessLog
from proxy.metrics import ProxyMetrics


class RequestObserver:
    """Counts requests and writes the access log."""

    __slots__ = ("access_log", "metrics")

    def __init__(self, metrics: ProxyMetrics, access_log: AccessLog | None = None) -> None:
        self.metrics = metrics
        self.access_log = access_log

    def done(
        self,
        deployment: str,
        protocol: str,
        method: str,
        path: str,
        status: int | str,
        started_s: float,
        replica: str = "",
        request_id: str = "",
    ) -> None:
        """One request answered with `status` (an HTTP status or a gRPC code
        name); `started_s` is its `time.perf_counter()` on arrival."""
        latency_s = time.perf_counter() - started_s
        self.metrics.observe(deployment, protocol, str(status), latency_s)
        if self.access_log is not None:
            self.access_log.record(
                deployment, protocol, method, path, status, latency_s, replica, request_id
            )

    @contextlib.contextmanager
    def grpc_call(self, deployment: str, method: str) -> Iterator[None]:
        """Notes a DataPlane call with the status code it ends with."""
        started_s = time.perf_counter()
        code = "OK"
        try:
            yield
        except CapstanError as error:
            code = error.code.name
            raise
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except Exception:
            code = "INTERNAL"
            raise
        finally:
            self.done(deployment, "grpc", method, "", code, started_s)
