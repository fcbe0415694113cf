"""Deletes packages no stored deployment names: every `interval_s`, the
hashes named by each deployment's spec, its last stable spec and its version
history (so that a rollback finds its code) are kept, and so is anything
used within the grace period; the rest goes."""

from __future__ import annotations

import asyncio
import logging
import time

from controlplane.packages.store import PackageStore
from controlplane.store import Store

log = logging.getLogger("capstan.controlplane.packages")


async def referenced(store: Store) -> set[str]:
    """The package hashes that stored deployments name."""
    hashes = set()
    for record in await store.deployments():
        specs = [record.spec, record.stable_spec]
        specs += [version.spec for version in await store.history(record.name)]
        hashes.update(spec.replica.package_sha256 for spec in specs if spec is not None)
    hashes.discard("")
    return hashes


async def collect_once(store: Store, packages: PackageStore, grace_s: float) -> list[str]:
    """One collection; the hashes it deleted."""
    keep = await referenced(store)
    removed = await asyncio.to_thread(packages.collect, keep, time.time(), grace_s)
    for sha256 in removed:
        log.info("deleted package %s: no stored deployment names it", sha256)
    return removed


async def run_collector(
    store: Store, packages: PackageStore, grace_s: float, interval_s: float
) -> None:
    """Collects every `interval_s` until cancelled; a failed pass is logged
    and the next one tries again."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await collect_once(store, packages, grace_s)
        except Exception:
            log.exception("collecting packages failed; the next pass will retry")
