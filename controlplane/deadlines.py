"""Bounding a wait the caller asked to bound (`timeout_s` in requests)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from capstan.errors import DeadlineExceeded


@contextlib.asynccontextmanager
async def deadline(timeout_s: float, what: str) -> AsyncIterator[None]:
    """Bounds a wait by `timeout_s` (0: no bound), answering DEADLINE_EXCEEDED."""
    if timeout_s <= 0:
        yield
        return
    try:
        async with asyncio.timeout(timeout_s):
            yield
    except TimeoutError:
        raise DeadlineExceeded(
            f"{what} did not finish within {timeout_s:g} s; it goes on in the background"
        ) from None
