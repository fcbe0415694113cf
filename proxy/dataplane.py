"""The gRPC DataPlane: calls to deployments by name from any language.

Arguments arrive as JSON and go to the replica as they came (checked, never
re-encoded); results come back as JSON. This is a public edge: it has no way
to send a pickle (bytes that are not JSON are INVALID_ARGUMENT), since pickles
run code and cross only the authenticated internal links.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import grpc

from capstan.errors import InvalidSpec, answers_errors
from capstan.internal.v1 import replica_pb2
from capstan.v1 import dataplane_pb2, dataplane_pb2_grpc, deployment_pb2
from proxy.observer import RequestObserver
from proxy.router import Router, within

_JSON = deployment_pb2.ENCODING_JSON


class DataPlane(dataplane_pb2_grpc.DataPlaneServiceServicer):
    """DataPlaneService, routing each call through the shared Router."""

    def __init__(self, router: Router, observer: RequestObserver) -> None:
        self._router = router
        self._observer = observer

    @answers_errors
    async def Call(
        self, request: dataplane_pb2.CallRequest, context: grpc.aio.ServicerContext
    ) -> dataplane_pb2.CallResponse:
        with self._observer.grpc_call(request.deployment, request.method):
            payload = await self._router.call(request.deployment, _invocation(request))
        return dataplane_pb2.CallResponse(result_json=payload.data)

    @answers_errors
    async def CallStream(
        self, request: dataplane_pb2.CallStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[dataplane_pb2.CallStreamResponse]:
        exchange = replica_pb2.RequestFrame(invocation=_invocation(request))
        # The deadline runs until the first reply: a stream may then run long.
        seconds = self._router.request_timeout_s(request.deployment)
        with self._observer.grpc_call(request.deployment, request.method):
            sent = self._router.send(request.deployment, exchange)
            replies = await within(seconds, request.deployment, sent)
            try:
                async for reply in replies:
                    # The replica may end a stream with a bare `done` message.
                    if reply.HasField("result"):
                        yield dataplane_pb2.CallStreamResponse(item_json=reply.result.data)
            finally:
                replies.cancel()


def _invocation(
    request: dataplane_pb2.CallRequest | dataplane_pb2.CallStreamRequest,
) -> replica_pb2.Invocation:
    _check_json(request.args_json, list, "args_json", "a JSON array")
    _check_json(request.kwargs_json, dict, "kwargs_json", "a JSON object")
    arguments = deployment_pb2.Arguments(
        encoding=_JSON, args=request.args_json, kwargs=request.kwargs_json
    )
    return replica_pb2.Invocation(method=request.method, arguments=arguments, result_encoding=_JSON)


def _check_json(data: bytes, kind: type, field: str, expected: str) -> None:
    if not data:
        return
    try:
        value = json.loads(data)
    except ValueError as exc:  # UnicodeDecodeError included
        raise InvalidSpec(f"{field} is not valid JSON: {exc}") from None
    if not isinstance(value, kind):
        raise InvalidSpec(f"{field} must be {expected}, got {type(value).__name__}")
