"""WebSockets over Exchange: the proxy relays a client's socket as
`websocket` frames of one request, and the ingress ASGI app sees a normal
ASGI WebSocket connection.

The app's accept (or close, refusing) is the request's first reply; its
messages follow; the request ends when the app returns. A close the app did
not send is left to the proxy (1000, as ASGI servers do).
"""

from __future__ import annotations

import logging
from typing import Any

from capstan.internal.v1 import replica_pb2
from executors.replica.http import Emit, Inbound, scope_for

log = logging.getLogger("capstan.replica")

_INTERNAL_ERROR = 1011


def inbound_for(request: replica_pb2.HttpRequest) -> Inbound:
    """The socket's receive(): websocket.connect, then the client's messages."""
    return Inbound({"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1006})


def client_message(message: replica_pb2.WebSocketMessage) -> dict[str, Any]:
    """A message from the client as an ASGI event."""
    kind = message.WhichOneof("kind")
    if kind == "text":
        return {"type": "websocket.receive", "text": message.text}
    if kind == "bytes":
        return {"type": "websocket.receive", "bytes": message.bytes}
    return {"type": "websocket.disconnect", "code": message.close.code or 1005}


def websocket_scope(
    request: replica_pb2.HttpRequest, instance: Any, state: dict[str, Any]
) -> dict[str, Any]:
    scope = scope_for(request, instance, state)
    scope["type"] = "websocket"
    del scope["method"]
    protocols = [
        value.decode("latin-1")
        for name, value in scope["headers"]
        if name.lower() == b"sec-websocket-protocol"
    ]
    scope["subprotocols"] = [p.strip() for value in protocols for p in value.split(",")]
    return scope


class _Send:
    """ASGI send() for a socket: each event becomes a frame at once."""

    __slots__ = ("_emit", "_id", "is_closed")

    def __init__(self, request_id: int, emit: Emit) -> None:
        self._emit = emit
        self._id = request_id
        self.is_closed = False

    async def __call__(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if self.is_closed:
            raise RuntimeError(f"ASGI app sent {kind!r} after closing the WebSocket")
        message = replica_pb2.WebSocketMessage()
        if kind == "websocket.accept":
            message.accept.subprotocol = event.get("subprotocol") or ""
            for name, value in event.get("headers") or ():
                message.accept.headers.add(name=name, value=value)
        elif kind == "websocket.send":
            if event.get("text") is not None:
                message.text = event["text"]
            else:
                message.bytes = event.get("bytes") or b""
        elif kind == "websocket.close":
            # FastAPI may give a non-str reason (its validation errors).
            self.close(int(event.get("code", 1000)), str(event.get("reason") or ""))
            return
        else:
            raise RuntimeError(f"unsupported WebSocket event {kind!r}")
        self._emit(replica_pb2.ResponseFrame(id=self._id, websocket=message))

    def close(self, code: int, reason: str = "") -> None:
        self.is_closed = True
        close = replica_pb2.WebSocketClose(code=code, reason=reason)
        message = replica_pb2.WebSocketMessage(close=close)
        self._emit(replica_pb2.ResponseFrame(id=self._id, websocket=message))


async def serve_websocket(
    app: Any,
    instance: Any,
    state: dict[str, Any],
    request: replica_pb2.HttpRequest,
    receive: Inbound,
    request_id: int,
    emit: Emit,
) -> replica_pb2.ResponseFrame:
    """Runs the ingress app on the socket; returns the final (empty) frame."""
    send = _Send(request_id, emit)
    try:
        await app(websocket_scope(request, instance, state), receive, send)
    except Exception:
        log.exception("WebSocket handler failed")
        if not send.is_closed:
            send.close(_INTERNAL_ERROR)
    finally:
        receive.close()
    return replica_pb2.ResponseFrame(id=request_id, done=True)


def refused(request_id: int) -> replica_pb2.ResponseFrame:
    """The answer to a WebSocket for a deployment that is not an ASGI app."""
    close = replica_pb2.WebSocketClose(code=1003, reason="this deployment takes no WebSockets")
    message = replica_pb2.WebSocketMessage(close=close)
    return replica_pb2.ResponseFrame(id=request_id, done=True, websocket=message)
