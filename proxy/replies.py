"""The replies to one request on an Exchange stream, as its caller sees them.

A request's replies land in its `Inbox` (filled by the stream's reader);
`Replies` is the caller's end: iterate it, `push` more of the request, or
`cancel` it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Protocol

from capstan import errors
from capstan.internal.v1 import replica_pb2


class Stream(Protocol):
    """What Replies needs of the client whose stream carries the request."""

    address: str

    async def push(self, frame: replica_pb2.RequestFrame) -> None: ...

    def abandon(self, request_id: int, on_final: Callable[[], None] | None) -> None: ...


class Rejected(errors.Unavailable):
    """The replica never started the request, so sending it elsewhere is safe."""


class Inbox:
    """Replies (or the error that ended them) for one request, in order.
    `on_final`, once the caller abandoned the request, is called when the
    replica's last reply comes (or the stream ends) instead of storing it."""

    __slots__ = ("items", "on_final", "waiter")

    def __init__(self) -> None:
        self.items: deque[replica_pb2.ResponseFrame | errors.CapstanError] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.on_final: Callable[[], None] | None = None

    def put(self, item: replica_pb2.ResponseFrame | errors.CapstanError) -> None:
        self.items.append(item)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        while not self.items:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None


class Replies:
    """The replies to one request. Iterating yields ResponseFrame messages
    (the last has `done` set) and raises the Capstan error a reply carries.

    `on_done`, if set, is called once when the last reply has been consumed,
    an error raised, or, for a cancelled request, once the replica answered
    the cancellation: a sync handler's thread cannot be interrupted, and the
    replica answers only when it returns, so its slot stays taken till then."""

    __slots__ = ("_client", "_inbox", "done", "id", "on_done")

    def __init__(self, client: Stream, request_id: int, inbox: Inbox) -> None:
        self._client = client
        self._inbox = inbox
        self.id = request_id
        self.done = False
        self.on_done: Callable[[], None] | None = None

    @property
    def address(self) -> str:
        """The replica's address (for the access log)."""
        return self._client.address

    async def started(self) -> None:
        """Waits for the first reply without consuming it; raises its error
        (`Rejected` when the replica refused the request)."""
        inbox = self._inbox
        if not inbox.items:
            await inbox.wait()
        first = inbox.items[0]
        if not isinstance(first, replica_pb2.ResponseFrame) or first.HasField("error"):
            await self.__anext__()  # consumes and raises it

    def __aiter__(self) -> Replies:
        return self

    async def __anext__(self) -> replica_pb2.ResponseFrame:
        if self.done:
            raise StopAsyncIteration
        inbox = self._inbox
        if not inbox.items:
            await inbox.wait()
        item = inbox.items.popleft()
        if not isinstance(item, replica_pb2.ResponseFrame):
            self._finish()
            raise item
        if item.HasField("error"):
            self._finish()
            raise error_from_reply(item.error)
        if item.done:
            self._finish()
        return item

    async def push(self, frame: replica_pb2.RequestFrame) -> None:
        """Sends a later frame of this request (a body chunk, a WebSocket
        message); waits while the stream has much queued. Dropped once the
        request has ended."""
        frame.id = self.id
        await self._client.push(frame)

    def cancel(self) -> None:
        """Abandons the request, telling the replica to cancel it. Idempotent;
        a no-op once the last reply has been consumed."""
        if not self.done:
            self.done = True
            on_done, self.on_done = self.on_done, None
            self._client.abandon(self.id, on_done)

    def _finish(self) -> None:
        self.done = True
        on_done, self.on_done = self.on_done, None
        if on_done is not None:
            on_done()


def error_from_reply(error: replica_pb2.Error) -> errors.CapstanError:
    """The Capstan error an Exchange Error message stands for."""
    if error.rejected:
        return Rejected(error.message or "the replica rejected the request")
    if error.exception_type:
        return errors.UserCodeError(error.message, error.exception_type, error.traceback)
    return errors.error_for_code(error.code, error.message)
