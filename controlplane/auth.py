"""Bearer-token authentication for the control API.

The API runs arbitrary code by design, so with a token configured every call
must carry `authorization: Bearer <token>`; only health checks and reflection
are open. Clients on plaintext channels add the header as call metadata.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from capstan.errors import Unauthenticated, abort

_EXEMPT_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
_MESSAGE = "missing or wrong bearer token"


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Rejects calls without the right bearer token with UNAUTHENTICATED."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("BearerTokenInterceptor needs a non-empty token")
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(_EXEMPT_PREFIXES):
            return handler
        if self._authorized(handler_call_details.invocation_metadata or ()):
            return handler
        return _rejecting(handler)

    def _authorized(self, metadata: Any) -> bool:
        values = [value for key, value in metadata if key == "authorization"]
        if len(values) != 1 or not isinstance(values[0], str):
            return False
        return hmac.compare_digest(values[0].encode(), self._expected)


async def _abort(_request: Any, context: grpc.aio.ServicerContext) -> None:
    await abort(context, Unauthenticated(_MESSAGE))


def _rejecting(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same cardinality as `handler` that only aborts. The
    request is left as bytes: nothing from an unauthenticated caller is parsed."""
    serializer = handler.response_serializer
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(_abort, response_serializer=serializer)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(_abort, response_serializer=serializer)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(_abort, response_serializer=serializer)
    return grpc.stream_stream_rpc_method_handler(_abort, response_serializer=serializer)
