"""A server interceptor that lets in only calls carrying one secret value
under one metadata key: the control API's bearer token, a replica's cluster
secret. Health checks and reflection stay open.

A refused call is answered UNAUTHENTICATED before its request is parsed:
nothing an unauthenticated caller sends is ever deserialised (a replica's
payloads may be pickles, which would run the sender's code).

Part of the core: it imports nothing of Capstan but capstan.errors.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from capstan.errors import Unauthenticated, abort

_EXEMPT_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class MetadataGuard(grpc.aio.ServerInterceptor):
    """Rejects calls whose `key` metadata is not exactly `expected` (compared
    in constant time) with UNAUTHENTICATED and `message`."""

    def __init__(self, key: str, expected: str, message: str) -> None:
        if not expected:
            raise ValueError(f"a guard on {key!r} needs a non-empty value to expect")
        self._key = key
        self._expected = expected.encode()
        self._message = message

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(_EXEMPT_PREFIXES):
            return handler
        if self._is_authorized(handler_call_details.invocation_metadata or ()):
            return handler
        return _rejecting(handler, self._message)

    def _is_authorized(self, metadata: Any) -> bool:
        values = [value for key, value in metadata if key == self._key]
        if len(values) != 1 or not isinstance(values[0], str):
            return False
        return hmac.compare_digest(values[0].encode(), self._expected)


def _rejecting(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same cardinality as `handler` that only aborts. It has
    no request deserializer: the request stays bytes, never parsed."""

    async def refuse(_request: Any, context: grpc.aio.ServicerContext) -> None:
        await abort(context, Unauthenticated(message))

    serializer = handler.response_serializer
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(refuse, response_serializer=serializer)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(refuse, response_serializer=serializer)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(refuse, response_serializer=serializer)
    return grpc.stream_stream_rpc_method_handler(refuse, response_serializer=serializer)
