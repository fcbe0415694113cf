"""One replica's request stream: a channel and one long-lived Exchange stream.

Every request to a replica from this process travels on one bidi
`ReplicaService.Exchange` stream, told apart by id. A writer task serialises
writes (grpc.aio allows one in flight) and a reader task hands each reply to
the waiting request's inbox, so a request costs one write, one read and one
future, not an RPC.

Big bodies go as a first frame and then `push`ed chunks; the writer batches
at most BATCH_BYTES per message, and `push` waits while more than
_HIGH_WATER_BYTES are queued, so an upload costs the proxy a bounded buffer,
not its size.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable

import grpc

from capstan import errors
from capstan.channels import KEEPALIVE, Keepalive, channel_options
from capstan.framing import BATCH_BYTES, MAX_FRAME_BYTES
from capstan.internal.v1 import replica_pb2, replica_pb2_grpc
from capstan.links import ClusterLinks
from proxy.replies import Inbox, Rejected, Replies

__all__ = ["Rejected", "ReplicaClient", "Replies"]

log = logging.getLogger(__name__)

NO_LINKS = ClusterLinks()

# `push` waits while more than this is queued for the stream.
_HIGH_WATER_BYTES = 4 * BATCH_BYTES


class _StreamEnded(Exception):
    """The replica closed the Exchange stream."""


class ReplicaClient:
    """A replica's channel and Exchange stream, opened lazily and reopened
    after a failure. Belongs to the event loop that first uses it.

    `ongoing` is the replica's own count of requests in flight, as piggybacked
    on its latest reply; `is_broken` says the last connection attempt failed.
    Keepalive pings find a replica host that vanished without closing the
    stream; the replica must be serving with the same `keepalive`. The stream
    carries `links`' cluster secret, and is TLS when `tls` (the route says
    the replica serves it).
    """

    def __init__(
        self,
        address: str,
        *,
        tls: bool = False,
        links: ClusterLinks = NO_LINKS,
        connect_timeout_s: float = 2.0,
        keepalive: Keepalive = KEEPALIVE,
    ) -> None:
        self.address = address
        self._tls = tls
        self._links = links
        self.ongoing = 0
        self.is_broken = False
        # The multiplexed models the replica last said it holds.
        self.model_ids: frozenset[str] = frozenset()
        self._connect_timeout_s = connect_timeout_s
        self._keepalive = keepalive
        self._channel: grpc.aio.Channel | None = None
        self._session: asyncio.Task[None] | None = None
        # Frames to write, with their sizes.
        self._outbox: deque[tuple[replica_pb2.RequestFrame, int]] = deque()
        self._outbox_bytes = 0
        # Resolved when the outbox falls below _HIGH_WATER_BYTES.
        self._drained: asyncio.Future[None] | None = None
        # Set while the writer waits for work; resolving it wakes the writer.
        # A bare future costs less per request than an asyncio.Event.
        self._writer_idle: asyncio.Future[None] | None = None
        self._waiters: dict[int, Inbox] = {}
        self._ids = itertools.count(1)
        self._idle: asyncio.Event | None = None
        self._closed = False

    @property
    def pending(self) -> int:
        """Requests sent on this client and not yet answered in full."""
        return len(self._waiters)

    def send(self, request: replica_pb2.RequestFrame) -> Replies:
        """Sends `request` (its `id` is assigned here) and returns its replies.
        Raises BackPressure, failing only this request, when it is too big
        for one message."""
        if self._closed:
            raise Rejected(f"replica {self.address} is being removed")
        size = request.ByteSize()
        if size > MAX_FRAME_BYTES:
            raise errors.BackPressure(
                f"the request is {size} bytes, over the {MAX_FRAME_BYTES}-byte limit "
                "of one message; send big data as a streamed HTTP body"
            )
        request.id = request_id = next(self._ids)
        inbox = Inbox()
        self._waiters[request_id] = inbox
        self._outbox.append((request, size))
        self._outbox_bytes += size
        if self._session is None:
            self._session = asyncio.get_running_loop().create_task(self._run_session())
        else:
            self._wake_writer()
        return Replies(self, request_id, inbox)

    async def push(self, frame: replica_pb2.RequestFrame) -> None:
        """Queues a later frame of request `frame.id`, then waits while more
        than _HIGH_WATER_BYTES are queued. Dropped if the request has ended."""
        if frame.id not in self._waiters:
            return
        size = frame.ByteSize()
        self._outbox.append((frame, size))
        self._outbox_bytes += size
        self._wake_writer()
        while self._outbox_bytes > _HIGH_WATER_BYTES and self._session is not None:
            if self._drained is None:
                self._drained = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._drained)

    async def call(self, invocation: replica_pb2.Invocation) -> replica_pb2.Payload:
        """Calls a method and returns its result."""
        replies = self.send(replica_pb2.RequestFrame(invocation=invocation))
        try:
            reply = await replies.__anext__()
        finally:
            replies.cancel()
        return reply.result

    async def close(self, grace_s: float = 0.0) -> None:
        """Waits up to `grace_s` for requests in flight, then closes the stream
        and the channel; requests still pending fail with Unavailable."""
        self._closed = True
        if self._waiters and grace_s > 0:
            self._idle = asyncio.Event()
            try:
                async with asyncio.timeout(grace_s):
                    await self._idle.wait()
            except TimeoutError:
                log.warning(
                    "closing replica %s with %d requests in flight", self.address, self.pending
                )
        if self._session is not None:
            self._session.cancel()
            try:
                await self._session
            except asyncio.CancelledError:
                if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise
        if self._channel is not None:
            await self._channel.close()

    def abandon(self, request_id: int, on_final: Callable[[], None] | None) -> None:
        """Tells the replica to cancel the request; `on_final` runs once it
        answered (or the stream ended)."""
        inbox = self._waiters.get(request_id)
        if inbox is None:  # its last reply already came
            if on_final is not None:
                on_final()
            return
        inbox.on_final = on_final or _nothing
        inbox.items.clear()
        self._outbox.append((replica_pb2.RequestFrame(id=request_id, cancel=True), 4))
        self._wake_writer()

    def _wake_writer(self) -> None:
        idle = self._writer_idle
        if idle is not None and not idle.done():
            idle.set_result(None)

    def _note_if_idle(self) -> None:
        if self._idle is not None and not self._waiters:
            self._idle.set()

    async def _run_session(self) -> None:
        try:
            call = await self._open()
        except errors.CapstanError as exc:
            self._fail_pending(exc)
            self._session = None
            return
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._write_loop(call))
                tasks.create_task(self._read_loop(call))
        except* (grpc.aio.AioRpcError, _StreamEnded) as group:
            log.info("stream to replica %s ended: %s", self.address, group.exceptions[0])
        except* Exception as group:
            log.error("stream to replica %s failed", self.address, exc_info=group.exceptions[0])
        finally:
            call.cancel()
            self._fail_pending(errors.Unavailable(f"lost the stream to replica {self.address}"))
            self._session = None

    async def _open(self) -> grpc.aio.StreamStreamCall:
        if self._channel is None:
            options = channel_options(self._keepalive)
            self._channel = self._links.channel(self.address, tls=self._tls, options=options)
        channel = self._channel
        # A replica that refuses connections fails fast, so the router
        # retries elsewhere at once. Requests are written only once the
        # channel is READY: those are the ones the replica may have started.
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                await _until_ready(channel)
        except (TimeoutError, ConnectionError) as exc:
            self.is_broken = True
            reason = str(exc) or "timed out"
            raise Rejected(f"cannot connect to replica {self.address} ({reason})") from None
        self.is_broken = False
        return replica_pb2_grpc.ReplicaServiceStub(channel).Exchange(metadata=self._links.metadata)

    async def _write_loop(self, call: grpc.aio.StreamStreamCall) -> None:
        # The only writer: grpc.aio allows one write at a time, and a write
        # cancelled half-way (say, by a client disconnecting) would cancel the
        # whole stream, so callers never write themselves.
        outbox = self._outbox
        loop = asyncio.get_running_loop()
        while True:
            while outbox:
                # What queued while the last write was in flight goes in one
                # message, up to BATCH_BYTES. Taken before the write: a request
                # whose write started counts as delivered, so it is never
                # retried elsewhere.
                frames, size = [], 0
                while outbox and size < BATCH_BYTES:
                    frame, frame_size = outbox.popleft()
                    frames.append(frame)
                    size += frame_size
                self._outbox_bytes -= size
                await call.write(replica_pb2.ExchangeRequest(frames=frames))
                self._note_drained()
            self._writer_idle = loop.create_future()
            try:
                await self._writer_idle
            finally:
                self._writer_idle = None

    async def _read_loop(self, call: grpc.aio.StreamStreamCall) -> None:
        waiters = self._waiters
        eof = grpc.aio.EOF
        while True:
            message = await call.read()
            if message is eof:
                raise _StreamEnded("the replica closed the stream")
            self.ongoing = message.ongoing_requests
            if message.HasField("loaded_models"):
                self.model_ids = frozenset(message.loaded_models.ids)
            for reply in message.frames:
                inbox = waiters.get(reply.id)
                if inbox is None:
                    continue  # a reply to a request we abandoned
                if reply.done:
                    del waiters[reply.id]
                    self._note_if_idle()
                if inbox.on_final is None:
                    inbox.put(reply)
                elif reply.done:
                    inbox.on_final()

    def _note_drained(self) -> None:
        drained = self._drained
        if drained is not None and self._outbox_bytes <= _HIGH_WATER_BYTES:
            self._drained = None
            if not drained.done():
                drained.set_result(None)

    def _fail_pending(self, error: errors.CapstanError) -> None:
        unwritten = {
            request.id
            for request, _ in self._outbox
            if request.HasField("http") or request.HasField("invocation")
        }
        self._outbox.clear()
        self._outbox_bytes = 0
        self._note_drained()
        waiters, self._waiters = self._waiters, {}
        for request_id, inbox in waiters.items():
            if inbox.on_final is not None:
                inbox.on_final()
            elif request_id in unwritten:
                inbox.put(Rejected(f"replica {self.address} never received the request"))
            else:
                inbox.put(error)
        self._note_if_idle()


async def _until_ready(channel: grpc.aio.Channel) -> None:
    state = channel.get_state(try_to_connect=True)
    while state is not grpc.ChannelConnectivity.READY:
        if state is grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            raise ConnectionError("connection failed")
        if state is grpc.ChannelConnectivity.SHUTDOWN:
            raise ConnectionError("channel closed")
        await channel.wait_for_state_change(state)
        state = channel.get_state(try_to_connect=True)


def _nothing() -> None:
    pass
