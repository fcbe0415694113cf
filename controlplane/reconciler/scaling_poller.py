"""Polls autoscaled deployments' replicas for their ongoing requests every
metrics interval, feeds the totals to the ScalingMemory (which decides), and
wakes the reconciler when a target changed. Never dies from one bad round."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from controlplane.reconciler.actuator import Actuator
from controlplane.reconciler.fleet import Fleet
from controlplane.reconciler.scaling_memory import ScalingMemory
from controlplane.records import DeploymentRecord

log = logging.getLogger("capstan.controlplane")


class ScalingPoller:
    """`records()` is the deployments as last read; `wake()` runs a pass."""

    def __init__(
        self,
        memory: ScalingMemory,
        fleet: Fleet,
        actuator: Actuator,
        records: Callable[[], Iterable[DeploymentRecord]],
        wake: Callable[[], None],
        idle_s: float,
    ) -> None:
        self._memory = memory
        self._fleet = fleet
        self._actuator = actuator
        self._records = records
        self._wake = wake
        self._idle_s = idle_s

    async def run(self) -> None:
        while True:
            try:
                await self._poll()
            except Exception:
                log.exception("autoscaling round failed; the next one will retry")
            wait_s = self._idle_s
            next_poll_mono_s = self._memory.next_poll_mono_s()
            if next_poll_mono_s is not None:
                wait_s = min(wait_s, max(0.01, next_poll_mono_s - time.monotonic()))
            await asyncio.sleep(wait_s)

    async def _poll(self) -> None:
        names = self._memory.due(self._records(), time.monotonic())
        if not names:
            return
        totals = await asyncio.gather(*(self._total_ongoing(name) for name in names))
        now_mono_s = time.monotonic()
        pairs = zip(names, totals, strict=True)
        changed = [self._memory.sample(name, total, now_mono_s) for name, total in pairs]
        if any(changed):
            self._wake()

    async def _total_ongoing(self, deployment: str) -> float | None:
        """Ongoing requests summed over the deployment's routable replicas;
        None when none answered."""
        refs = [r.record.ref for r in self._fleet.of(deployment) if r.is_routable]
        counts = await asyncio.gather(*(self._actuator.ongoing(ref) for ref in refs if ref))
        answered = [c for c in counts if c is not None]
        return float(sum(answered)) if answered else None
