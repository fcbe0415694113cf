"""Asks every executor, at once, what it runs and what capacity it has.
An executor that fails to answer in time is logged and reported as such
(None, or the error as text), never raised: a failed look judges nothing."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence

from controlplane.launch import Capacity
from controlplane.reconciler.adoption import Observation
from executors.base import Executor, Node

log = logging.getLogger("capstan.controlplane")


class Observer:
    """Looks at `executors` (by name), each within `timeout_s`."""

    def __init__(self, executors: Mapping[str, Executor], timeout_s: float) -> None:
        self._executors = executors
        self._timeout_s = timeout_s

    async def look(self) -> tuple[dict[str, Observation | None], Capacity]:
        """What each executor runs (None: it could not say) and its capacity."""
        names = list(self._executors)
        seen = asyncio.gather(*(self._observe(name) for name in names))
        held = asyncio.gather(*(self._capacity(name) for name in names))
        observations, capacities = await asyncio.gather(seen, held)
        return dict(zip(names, observations, strict=True)), dict(
            zip(names, capacities, strict=True)
        )

    async def _observe(self, name: str) -> Observation | None:
        asked_mono_s = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout_s):
                refs = await self._executors[name].observe()
        except Exception as error:  # judge no replica dead on a failed look
            log.warning("executor %s could not observe its replicas: %r", name, error)
            return None
        return Observation(asked_mono_s, {ref.replica_id: ref for ref in refs})

    async def _capacity(self, name: str) -> Sequence[Node] | str:
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._executors[name].capacity()
        except Exception as error:
            log.warning("executor %s could not report capacity: %r", name, error)
            return repr(error)
