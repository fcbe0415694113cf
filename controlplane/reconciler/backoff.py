"""Start-failure backoff per deployment. Pure: the caller passes the time.

Failures (a replica that would not start, died, or failed its health checks)
wait base * 2**(n-1) seconds before the next start, capped. A failure long
after the previous one starts the count again, so one crash a day never
grows into a long wait.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class BackoffPolicy:
    base_s: float = 1.0
    max_s: float = 60.0
    reset_s: float = 300.0


@dataclasses.dataclass(frozen=True)
class Backoff:
    """Where one deployment stands: how many failures in a row, and when
    starting replicas may resume."""

    failures: int = 0
    last_failure_at: float = 0.0
    retry_at: float = 0.0
    reason: str = ""

    def is_waiting(self, now: float) -> bool:
        return now < self.retry_at


def after_failure(
    backoff: Backoff | None, now: float, reason: str, policy: BackoffPolicy
) -> Backoff:
    """The backoff after one more failure at `now`."""
    previous = backoff or Backoff()
    is_fresh = now - previous.last_failure_at > policy.reset_s
    failures = 1 if is_fresh or previous.failures == 0 else previous.failures + 1
    delay = min(policy.max_s, policy.base_s * 2 ** (failures - 1))
    return Backoff(failures=failures, last_failure_at=now, retry_at=now + delay, reason=reason)
