"""A request body that does not decode as the message its method takes is
the caller's mistake. gRPC itself would answer INTERNAL ("Exception
deserializing request!"), as if the server had failed; this interceptor
answers INVALID_ARGUMENT instead, saying what could not be read."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError


@dataclasses.dataclass(frozen=True)
class _Undecodable:
    reason: str


class UndecodableRequests(grpc.aio.ServerInterceptor):
    """Wraps each unary-request method's deserializer (streamed requests are
    left to gRPC) so that a corrupt body becomes INVALID_ARGUMENT."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.request_deserializer is None:
            return handler
        method = handler_call_details.method
        decode = handler.request_deserializer

        def deserializer(data: bytes) -> Any:
            try:
                return decode(data)
            except DecodeError as error:
                return _Undecodable(f"the request to {method} is not a valid message: {error}")

        if handler.unary_unary is not None:
            return handler._replace(  # type: ignore[attr-defined]
                request_deserializer=deserializer, unary_unary=_unary(handler.unary_unary)
            )
        return handler._replace(  # type: ignore[attr-defined]
            request_deserializer=deserializer, unary_stream=_streamed(handler.unary_stream)
        )


def _unary(behaviour: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def answer(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, _Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)
        return await behaviour(request, context)

    return answer


def _streamed(behaviour: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    async def answer(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        if isinstance(request, _Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)
        async for item in behaviour(request, context):
            yield item

    return answer
