"""The route table routers follow: RUNNING replicas of each deployment.

Each change bumps the revision and wakes every watcher. A watcher gets the
latest table, not every intermediate one: each table replaces the one before,
so a slow watcher skips what it no longer needs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from capstan.links import ClusterLinks
from capstan.v1 import controlplane_pb2


class RouteTable:
    """The current table, its revision, and a way to wait for the next.

    Nothing is sent before the first `publish`: a restarted control plane
    must not hand routers an empty table before it has adopted its replicas.
    `first_revision` lets the server start above any revision an earlier
    run handed out, so revisions keep growing across restarts. `links` (how
    to reach the replicas) goes with every table.
    """

    def __init__(self, first_revision: int = 0, links: ClusterLinks | None = None) -> None:
        self._links = (links or ClusterLinks()).to_proto()
        self._revision = first_revision
        self._endpoints: tuple[controlplane_pb2.Endpoint, ...] = ()
        self._changed = asyncio.Event()
        self._is_ready = False
        self._is_closed = False
        # The revision each open watch has handed to gRPC, and a wake-up
        # for those waiting until every router has been sent a table.
        self._sent: dict[object, int] = {}
        self._sent_changed = asyncio.Event()

    @property
    def revision(self) -> int:
        return self._revision

    def snapshot(self) -> controlplane_pb2.WatchRoutesResponse:
        return controlplane_pb2.WatchRoutesResponse(
            revision=self._revision, endpoints=list(self._endpoints), links=self._links
        )

    def publish(self, endpoints: Sequence[controlplane_pb2.Endpoint]) -> bool:
        """Replaces the table; returns whether it changed."""
        ordered = tuple(sorted(endpoints, key=lambda e: e.name))
        if self._is_ready and ordered == self._endpoints:
            return False
        self._endpoints = ordered
        self._revision += 1
        self._is_ready = True
        self._fire()
        return True

    def close(self) -> None:
        """Ends every watch, so a stopping server need not wait for them."""
        self._is_closed = True
        self._fire()

    def _fire(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def watch(self) -> AsyncIterator[controlplane_pb2.WatchRoutesResponse]:
        """The current table, then each newer one as it appears, until the
        table is closed or the caller stops iterating."""
        watcher = object()
        try:
            while not self._is_ready and not self._is_closed:
                await self._changed.wait()
            while not self._is_closed:
                changed = self._changed
                snapshot = self.snapshot()
                yield snapshot
                # gRPC resumes us once the message is written: it has left.
                self._sent[watcher] = snapshot.revision
                self._sent_changed.set()
                self._sent_changed = asyncio.Event()
                await changed.wait()
        finally:
            self._sent.pop(watcher, None)

    async def sent_to_all(self, revision: int, timeout_s: float) -> bool:
        """Waits until every open watch has been sent `revision` or a later
        table (so a proxy knows a route before an apply says it is done);
        False if some had not after `timeout_s`."""
        try:
            async with asyncio.timeout(timeout_s):
                while any(sent < revision for sent in self._sent.values()):
                    await self._sent_changed.wait()
        except TimeoutError:
            return False
        return True
