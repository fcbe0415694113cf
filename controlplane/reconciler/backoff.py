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
    (monotonic seconds) the last came and starting replicas may resume."""

    failures: int = 0
    last_failure_mono_s: float = 0.0
    retry_mono_s: float = 0.0
    reason: str = ""

    def is_waiting(self, now_mono_s: float) -> bool:
        return now_mono_s < self.retry_mono_s


def after_failure(
    backoff: Backoff | None, now_mono_s: float, reason: str, policy: BackoffPolicy
) -> Backoff:
    """The backoff after one more failure at `now_mono_s`."""
    previous = backoff or Backoff()
    is_fresh = now_mono_s - previous.last_failure_mono_s > policy.reset_s
    failures = 1 if is_fresh or previous.failures == 0 else previous.failures + 1
    delay = min(policy.max_s, policy.base_s * 2 ** (failures - 1))
    return Backoff(failures, now_mono_s, now_mono_s + delay, reason)
