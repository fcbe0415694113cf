"""Waiting for a condition with a deadline: the one way tests wait.

`eventually` polls from async code, `eventually_sync` from plain code
(fixtures, sync tests, bench). Both return the first truthy value the probe
gives. Past the deadline they raise `TimeoutError` naming what was awaited
and the last value seen, or chained to the last exception the probe raised
when that exception is one the caller chose to ride out (`ignoring=`).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

_T = TypeVar("_T")
Errors = tuple[type[BaseException], ...]
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_INTERVAL_S = 0.02


class _Poll:
    """One wait: its deadline, and the last thing the probe gave."""

    def __init__(self, what: str, timeout_s: float) -> None:
        self.what = what
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s
        self.value: Any = None
        self.error: BaseException | None = None

    def took(self, value: Any, error: BaseException | None) -> bool:
        """Records one probe's outcome: True once it is truthy; raises
        `TimeoutError` when it is not and the deadline has passed."""
        self.value, self.error = value, error
        if error is None and value:
            return True
        if time.monotonic() <= self.deadline:
            return False
        if error is not None:
            last = f"last raised {type(error).__name__}: {error}"
        else:
            last = f"last value {value!r}"
        message = f"timed out after {self.timeout_s:g} s waiting for {self.what}; {last}"
        raise TimeoutError(message) from error


async def eventually(
    probe: Callable[[], _T | Awaitable[_T]],
    what: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    interval_s: float = DEFAULT_INTERVAL_S,
    ignoring: Errors = (),
) -> _T:
    """Calls `probe` (plain or async) until it returns something truthy, and
    returns that. Exceptions in `ignoring` count as "not yet"."""
    poll = _Poll(what, timeout_s)
    while True:
        if poll.took(*await _outcome(probe, ignoring)):
            return poll.value
        await asyncio.sleep(interval_s)


def eventually_sync(
    probe: Callable[[], _T],
    what: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    interval_s: float = DEFAULT_INTERVAL_S,
    ignoring: Errors = (),
) -> _T:
    """`eventually` for code that is not async: it blocks between polls."""
    poll = _Poll(what, timeout_s)
    while not poll.took(*_sync_outcome(probe, ignoring)):
        time.sleep(interval_s)
    return poll.value


async def _outcome(probe: Callable[[], Any], ignoring: Errors) -> tuple[Any, BaseException | None]:
    try:
        value = probe()
        return (await value if inspect.isawaitable(value) else value), None
    except ignoring as error:
        return None, error


def _sync_outcome(probe: Callable[[], Any], ignoring: Errors) -> tuple[Any, BaseException | None]:
    try:
        return probe(), None
    except ignoring as error:
        return None, error
