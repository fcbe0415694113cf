"""The read-only RPCs an operator watches with: the event stream and the
replicas' logs. A mixin of ControlPlaneService, kept apart because neither
changes anything: they read the store and ask executors for logs."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
from collections.abc import AsyncIterator, Mapping

import grpc

from capstan.errors import NotFound, answers_errors
from capstan.v1 import controlplane_pb2 as cp
from controlplane.reconciler.loop import Reconciler
from controlplane.records import Event
from controlplane.settings import Settings
from controlplane.store import Store
from executors.base import Executor, ReplicaRef
from executors.log_file import merged

# New events are looked for after each reconcile pass, and at least this often.
_EVENT_POLL_S = 1.0
_BACKLOG = 100
# Events sent per read of the store while catching up.
_EVENT_BATCH = 500


class Observing:
    """WatchEvents and StreamLogs, for ControlPlaneService."""

    _settings: Settings
    _store: Store
    _reconciler: Reconciler
    _executors: Mapping[str, Executor]
    # Set by the server once its HTTP port is bound.
    metrics_url: str = ""

    @answers_errors
    async def GetServerInfo(
        self, request: cp.GetServerInfoRequest, context: grpc.aio.ServicerContext
    ) -> cp.GetServerInfoResponse:
        """Where this Capstan serves, for clients to print."""
        return cp.GetServerInfoResponse(
            version=_version(),
            proxy_url=self._settings.proxy_url,
            metrics_url=self.metrics_url,
            state_dir=str(self._settings.state_dir.resolve()),
        )

    @answers_errors
    async def WatchEvents(
        self, request: cp.WatchEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[cp.WatchEventsResponse]:
        """The stored events after the cursor (or the latest backlog), then
        each new one, filtered by deployment or application."""
        names = await self._watched(request)
        cursor = request.after_id
        if not cursor:  # the latest ones first, then on from the newest
            backlog = await self._store.events_after(0, names, request.backlog or _BACKLOG)
            for event in backlog:
                yield cp.WatchEventsResponse(event=_event_proto(event))
            cursor = backlog[-1].id if backlog else await self._store.last_event_id()
        while True:
            events = await self._store.events_after(cursor, names, _EVENT_BATCH)
            for event in events:
                yield cp.WatchEventsResponse(event=_event_proto(event))
            cursor = events[-1].id if events else cursor
            if len(events) == _EVENT_BATCH:  # catching up
                continue
            if request.no_follow:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_EVENT_POLL_S):
                    await self._reconciler.next_pass()

    async def _watched(self, request: cp.WatchEventsRequest) -> list[str] | None:
        """The deployments whose events are wanted; None for all."""
        if request.application:
            app = await self._store.application(request.application)
            if app is None:
                raise NotFound(f'application "{request.application}" not found')
            return list(app.deployments)
        if request.deployment:
            return [request.deployment]
        return None

    @answers_errors
    async def StreamLogs(
        self, request: cp.StreamLogsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[cp.StreamLogsResponse]:
        """The output of one replica, or of every replica of a deployment,
        interleaved as it is read."""
        refs = await self._log_refs(request.deployment, request.replica)

        async def lines_of(ref: ReplicaRef) -> AsyncIterator[cp.StreamLogsResponse]:
            executor = self._executors[ref.executor]
            async for line in executor.read_log(ref, request.since_s, request.follow):
                yield cp.StreamLogsResponse(replica=ref.replica_id, line=line)

        async for reply in merged([lines_of(ref) for ref in refs]):
            yield reply

    async def _log_refs(self, deployment: str, replica_id: str) -> list[ReplicaRef]:
        """Where to read: the deployment's replicas, or the one asked for —
        live, or stopped but named in the events (its log is kept)."""
        record = await self._store.get(deployment)
        if record is None:
            raise NotFound(f'deployment "{deployment}" not found')
        live = [r.ref for r in await self._store.replicas(deployment) if r.ref is not None]
        if not replica_id:
            return live
        known = {ref.replica_id: ref for ref in live}
        if replica_id not in known:
            events = await self._store.events(deployment, limit=10_000)
            if replica_id not in {e.replica for e in events}:
                raise NotFound(f'deployment "{deployment}" has no replica "{replica_id}"')
            known[replica_id] = ReplicaRef(replica_id, record.spec.executor, address="")
        return [known[replica_id]]


def _version() -> str:
    try:
        return importlib.metadata.version("capstan")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _event_proto(event: Event) -> cp.Event:
    return cp.Event(
        id=event.id,
        time_s=event.ts,
        deployment=event.deployment,
        replica=event.replica,
        kind=event.kind,
        message=event.message,
    )
