"""Request bodies larger than one chunk, streamed to the replica as they
arrive instead of being held whole.

The first chunk rides in the request's own frame; the rest follow as `body`
frames. `Replies.push` waits while the replica stream has much queued, and
uvicorn stops reading the socket while we do not call receive(), so an
upload of any size costs the proxy a few chunks of memory.
"""

from __future__ import annotations

from typing import Any

from capstan.framing import CHUNK_BYTES
from capstan.internal.v1 import replica_pb2
from proxy.replica_client import Replies

Receive = Any


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


class TooLarge(Exception):
    """The body grew past the proxy's limit."""


async def read_start(receive: Receive, limit: int) -> tuple[bytes, bool]:
    """The body's first chunk (at least CHUNK_BYTES unless the body is
    shorter) and whether more follows. Raises ClientGone or TooLarge."""
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone
    body = message.get("body", b"")
    more = message.get("more_body", False)
    if more:
        chunks, size = [body], len(body)
        while more and size < CHUNK_BYTES:
            body, more = await _next(receive)
            chunks.append(body)
            size += len(body)
        body = b"".join(chunks)
    if len(body) > limit:
        raise TooLarge
    return body, more


class Upload:
    """The rest of a body, after a first chunk of `sent` bytes."""

    __slots__ = ("_limit", "_receive", "_sent")

    def __init__(self, receive: Receive, limit: int, sent: int) -> None:
        self._receive = receive
        self._limit = limit
        self._sent = sent

    async def send_rest(self, replies: Replies) -> None:
        """Reads the body from the client and pushes it to the replica.
        Raises ClientGone or TooLarge (the request must then be cancelled)."""
        more = True
        while more:
            chunks, size = [], 0
            while more and size < CHUNK_BYTES:
                body, more = await _next(self._receive)
                chunks.append(body)
                size += len(body)
            self._sent += size
            if self._sent > self._limit:
                raise TooLarge
            chunk = replica_pb2.BodyChunk(data=b"".join(chunks), last=not more)
            await replies.push(replica_pb2.RequestFrame(body=chunk))


async def _next(receive: Receive) -> tuple[bytes, bool]:
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone
    return message.get("body", b""), message.get("more_body", False)
