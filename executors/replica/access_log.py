"""The replica's access log: one INFO line per request as it ends, as Ray
Serve's replicas write (`CALL method OK 1.2ms`, `GET /path [request id] 200 3.4ms`).

Off unless a deployment sets `logging_config.enable_access_log: true`;
its log_level filters these lines like any other INFO line. The lines go
through the logger "capstan.replica.access", so the replica's format
(JSON, extra attributes) applies to them too.
"""

from __future__ import annotations

import logging
import time

import grpc

from capstan.internal.v1 import replica_pb2

log = logging.getLogger("capstan.replica.access")
_CANCELLED = grpc.StatusCode.CANCELLED.value[0]
_REQUEST_ID = b"x-request-id"


def enable(on: bool) -> None:
    # A disabled logger drops records before they are built; `is_on` lets
    # the request path skip even the timing.
    log.disabled = not on


def is_on() -> bool:
    return not log.disabled


def label(request: replica_pb2.RequestFrame) -> str:
    """What a request asked for: "CALL method" or "GET /path"; an HTTP
    request also names the id the proxy gave it (the key of the proxy's own
    access line): "GET /path [ID]"."""
    if request.WhichOneof("kind") == "invocation":
        return f"CALL {request.invocation.method_name or '__call__'}"
    http = request.http
    kind = "WEBSOCKET" if http.websocket else http.method
    for header in http.headers:
        if header.name == _REQUEST_ID:
            return f"{kind} {http.path} [{header.value.decode('latin-1')}]"
    return f"{kind} {http.path}"


def finished(what: str, started: float, outcome: str) -> None:
    """Logs a request that ended with `outcome`, started at `started`
    (`time.perf_counter()`)."""
    elapsed_ms = (time.perf_counter() - started) * 1000
    log.info("%s %s %.1fms", what, outcome, elapsed_ms)


def outcome(response: replica_pb2.ResponseFrame) -> str:
    """The end of a request in a word, from its final frame: its HTTP status
    when the frame carries one, CANCELLED, ERROR, else OK."""
    if response.HasField("error"):
        return "CANCELLED" if response.error.code == _CANCELLED else "ERROR"
    if response.HasField("http") and response.http.status:
        return str(response.http.status)
    return "OK"
