"""WebSockets relayed to an ASGI ingress deployment over the Exchange stream.

The handshake goes to a replica like any request; the replica's app answers
it (accept, or close to refuse), and from then on messages flow both ways as
`websocket` frames of that request, many sockets side by side on one stream.
Close codes travel both ways. A socket holds its replica slot while open,
as a request does while it runs, and no request timeout applies.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from capstan import errors
from capstan.internal.v1 import replica_pb2
from proxy.replica_client import Replies
from proxy.router import Router

log = logging.getLogger(__name__)

Receive = Any
Send = Any

# RFC 6455: the server hit an unexpected condition; try again later.
_INTERNAL_ERROR = 1011
_TRY_AGAIN_LATER = 1013
# After the client left, how long the app gets to see websocket.disconnect
# and return before it is cancelled.
_CLOSE_GRACE_S = 5.0


async def relay_websocket(
    router: Router,
    deployment: str,
    request: replica_pb2.RequestFrame,
    model_id: str,
    receive: Receive,
    send: Send,
) -> None:
    """Runs one WebSocket: handshake through the replica's app, then relays
    messages until either side closes."""
    if (await receive())["type"] != "websocket.connect":
        return
    try:
        replies = await router.send(deployment, request, model_id)
    except errors.CapstanError as exc:
        log.info("WebSocket to deployment %r refused: %s", deployment, exc)
        code = _TRY_AGAIN_LATER if isinstance(exc, errors.Unavailable) else _INTERNAL_ERROR
        await send({"type": "websocket.close", "code": code})
        return
    try:
        if await _handshake(replies, send):
            await _relay(replies, receive, send)
    except errors.CapstanError as exc:
        log.warning("WebSocket to deployment %r broke off: %s", deployment, exc)
        await _close_quietly(send, _INTERNAL_ERROR)
    finally:
        replies.cancel()


async def _handshake(replies: Replies, send: Send) -> bool:
    """Passes on the app's answer to the handshake; whether it accepted."""
    reply = await replies.__anext__()
    message = reply.websocket
    if reply.HasField("websocket") and message.HasField("accept"):
        accept = message.accept
        headers = [(h.name, h.value) for h in accept.headers]
        await send(
            {
                "type": "websocket.accept",
                "subprotocol": accept.subprotocol or None,
                "headers": headers,
            }
        )
        return True
    code = message.close.code if message.HasField("close") else 1000
    await send({"type": "websocket.close", "code": code or 1000})
    return False


async def _relay(replies: Replies, receive: Receive, send: Send) -> None:
    downstream = asyncio.ensure_future(_to_client(replies, send))
    upstream = asyncio.ensure_future(_to_replica(receive, replies))
    try:
        await asyncio.wait([downstream, upstream], return_when=asyncio.FIRST_COMPLETED)
        if upstream.done() and not downstream.done():
            # The client left; the app was told (websocket.disconnect).
            await asyncio.wait([downstream], timeout=_CLOSE_GRACE_S)
        failure = downstream.exception() if downstream.done() else None
        if isinstance(failure, errors.CapstanError) and not upstream.done():
            raise failure  # the client is still there to be told
        if failure is not None and not isinstance(failure, errors.CapstanError):
            log.debug("WebSocket relay to a departed client ended: %r", failure)
    finally:
        for task in (downstream, upstream):
            task.cancel()
        await asyncio.wait([downstream, upstream])


async def _to_client(replies: Replies, send: Send) -> None:
    """Replica → client, until the app returns; closes the socket if the app
    did not."""
    closed = False
    async for reply in replies:
        if not reply.HasField("websocket"):
            continue  # the final, empty frame
        message = reply.websocket
        kind = message.WhichOneof("kind")
        if kind == "text":
            await send({"type": "websocket.send", "text": message.text})
        elif kind == "bytes":
            await send({"type": "websocket.send", "bytes": message.bytes})
        elif kind == "close":
            closed = True
            close = message.close
            await send({"type": "websocket.close", "code": close.code, "reason": close.reason})
    if not closed:
        await _close_quietly(send, 1000)


async def _to_replica(receive: Receive, replies: Replies) -> None:
    """Client → replica, until the client disconnects."""
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.receive":
            frame = replica_pb2.WebSocketMessage()
            if message.get("text") is not None:
                frame.text = message["text"]
            else:
                frame.bytes = message.get("bytes") or b""
        elif kind == "websocket.disconnect":
            close = replica_pb2.WebSocketClose(code=message.get("code", 1005))
            frame = replica_pb2.WebSocketMessage(close=close)
        else:
            continue
        await replies.push(replica_pb2.RequestFrame(websocket=frame))
        if kind == "websocket.disconnect":
            return


async def _close_quietly(send: Send, code: int) -> None:
    try:
        await send({"type": "websocket.close", "code": code})
    except Exception:  # the client is already gone: nothing to tell it
        log.debug("WebSocket already closed", exc_info=True)
