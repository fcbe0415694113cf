"""Follows the control plane's route table.

The control plane is never on a request's path: while it is down or
restarting the watcher retries with capped backoff and the proxy keeps
routing with the last table it received.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

import grpc

from capstan.channels import channel_options
from capstan.tls import control_plane_credentials
from capstan.v1 import controlplane_pb2, controlplane_pb2_grpc

log = logging.getLogger(__name__)

Snapshot = controlplane_pb2.WatchRoutesResponse


class RouteWatcher:
    """Streams WatchRoutes from `address` and hands each table to `apply`.

    `revision` is that of the last table applied (None before the first);
    `is_connected` says whether the stream is up now. `token` (default
    $CAPSTAN_TOKEN) is sent as a bearer token; an empty one sends none.
    """

    def __init__(
        self,
        address: str,
        apply: Callable[[Snapshot], None],
        *,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 5.0,
        token: str | None = None,
    ) -> None:
        self.address = address
        token = os.environ.get("CAPSTAN_TOKEN", "") if token is None else token
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._last_failure: grpc.StatusCode | None = None
        self.revision: int | None = None
        self.is_connected = False
        self._apply = apply
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._first = asyncio.Event()

    async def run(self) -> None:
        """Watches until cancelled, reconnecting whenever the stream breaks."""
        async with _channel(self.address) as channel:
            stub = controlplane_pb2_grpc.ControlPlaneServiceStub(channel)
            delay_s = self._backoff_initial_s
            while True:
                if await self._follow(stub):
                    delay_s = self._backoff_initial_s
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, self._backoff_max_s)

    async def wait_ready(self, timeout_s: float) -> bool:
        """Whether a first table arrived within `timeout_s`."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._first.wait()
        except TimeoutError:
            return False
        return True

    async def _follow(self, stub: controlplane_pb2_grpc.ControlPlaneServiceStub) -> bool:
        """Applies tables until the stream ends; whether any arrived."""
        received = False
        try:
            request = controlplane_pb2.WatchRoutesRequest()
            async for snapshot in stub.WatchRoutes(request, metadata=self._metadata):
                if not self.is_connected:
                    log.info("watching routes at %s", self.address)
                    self.is_connected = True
                    self._last_failure = None
                received = True
                self._take(snapshot)
        except grpc.aio.AioRpcError as exc:
            # Warn once per outage, not once per retry; a refused token is a
            # misconfiguration, not an outage, so it is always shown once.
            code = exc.code()
            refused = code == grpc.StatusCode.UNAUTHENTICATED and self._last_failure != code
            level = logging.WARNING if self.is_connected or refused else logging.DEBUG
            self._last_failure = code
            log.log(
                level,
                "route watch on %s failed (%s); serving revision %s meanwhile",
                self.address,
                code.name,
                self.revision,
            )
        self.is_connected = False
        return received

    def _take(self, snapshot: Snapshot) -> None:
        try:
            self._apply(snapshot)
        except Exception:
            log.exception(
                "could not apply route table revision %d; keeping the last", snapshot.revision
            )
            return
        self.revision = snapshot.revision
        self._first.set()


def _channel(address: str) -> grpc.aio.Channel:
    """TLS when $CAPSTAN_TLS_CA says so (`capstan.tls.control_plane_credentials`)."""
    credentials = control_plane_credentials()
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=channel_options())
    return grpc.aio.secure_channel(address, credentials, options=channel_options())
