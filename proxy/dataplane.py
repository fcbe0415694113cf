"""The gRPC DataPlane: calls to deployments by name from any language.

Arguments arrive as google.protobuf.Value and go to the replica as the
internal JSON encoding; results come back as JSON and leave as a Value. This
is a public edge: it has no way to send a pickle, since pickles run code and
cross only the authenticated internal links.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator

import grpc
from google.protobuf import struct_pb2

from capstan import json_values
from capstan.errors import InternalError, InvalidSpec, UserCodeError, answers_errors
from capstan.internal.v1 import replica_pb2
from capstan.v1 import dataplane_pb2, dataplane_pb2_grpc
from proxy.observer import RequestObserver
from proxy.router import Router, within

_JSON = replica_pb2.ENCODING_JSON


class DataPlane(dataplane_pb2_grpc.DataPlaneServiceServicer):
    """DataPlaneService, routing each call through the shared Router."""

    def __init__(self, router: Router, observer: RequestObserver) -> None:
        self._router = router
        self._observer = observer

    @answers_errors
    async def Call(
        self, request: dataplane_pb2.CallRequest, context: grpc.aio.ServicerContext
    ) -> dataplane_pb2.CallResponse:
        name = request.deployment
        with self._observer.grpc_call(name, request.method_name), _naming(name):
            payload = await self._router.call(name, _invocation(request))
        return dataplane_pb2.CallResponse(result=_value(payload, name))

    @answers_errors
    async def CallStream(
        self, request: dataplane_pb2.CallStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[dataplane_pb2.CallStreamResponse]:
        name = request.deployment
        exchange = replica_pb2.RequestFrame(invocation=_invocation(request))
        # The deadline runs until the first reply: a stream may then run long.
        seconds = self._router.request_timeout_s(name)
        with self._observer.grpc_call(name, request.method_name), _naming(name):
            sent = self._router.send(name, exchange, request.multiplexed_model_id)
            replies = await within(seconds, name, sent)
            try:
                async for reply in replies:
                    # The replica may end a stream with a bare `done` message.
                    if reply.HasField("result"):
                        item = _value(reply.result, name)
                        yield dataplane_pb2.CallStreamResponse(item=item)
            finally:
                replies.cancel()


def _invocation(
    request: dataplane_pb2.CallRequest | dataplane_pb2.CallStreamRequest,
) -> replica_pb2.Invocation:
    arguments = replica_pb2.EncodedArguments(encoding=_JSON)
    for part in ("args", "kwargs"):
        if request.arguments.HasField(part):
            value = json_values.to_python(getattr(request.arguments, part), f"arguments.{part}")
            setattr(arguments, part, json.dumps(value, separators=(",", ":")).encode())
    return replica_pb2.Invocation(
        method_name=request.method_name,
        arguments=arguments,
        result_encoding=_JSON,
        multiplexed_model_id=request.multiplexed_model_id,
    )


def _value(payload: replica_pb2.Payload, deployment: str) -> struct_pb2.Value:
    """The replica's JSON result as a Value. The replica already refused
    results JSON cannot write; what is left to refuse is what JSON writes
    but a Value cannot hold (NaN, Infinity)."""
    result = json.loads(payload.data) if payload.data else None
    try:
        return json_values.to_value(result, "result")
    except InvalidSpec as error:  # the caller's request was fine: not INVALID_ARGUMENT
        raise InternalError(
            f"deployment {deployment!r} returned a {type(result).__name__} that JSON "
            f"cannot carry: {error.message}"
        ) from None


@contextlib.contextmanager
def _naming(deployment: str) -> Iterator[None]:
    """Tags a user exception with the deployment that raised it, for the
    ErrorInfo a client reads."""
    try:
        yield
    except UserCodeError as error:
        if not error.deployment:
            error.deployment = deployment
        raise
