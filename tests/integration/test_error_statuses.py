"""The one mapping from errors to gRPC statuses (`capstan.errors.answers_errors`),
on a real grpc.aio server on 127.0.0.1, called over a real channel."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
import pytest

from capstan import errors
from capstan.channels import channel_options, server_options
from capstan.errors import UserCodeError, answers_errors, from_rpc_error

pytestmark = pytest.mark.timeout(30)

Code = grpc.StatusCode


class Servicer:
    """Methods that end in each way a servicer method can end."""

    @answers_errors
    async def Unary(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return await _outcome(request, context)

    @answers_errors
    async def Streaming(
        self, request: bytes, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        yield b"first"
        yield await _outcome(request, context)


async def _outcome(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    if request == b"not-found":
        raise errors.NotFound('deployment "x" not found')
    if request == b"user-code":
        raise errors.UserCodeError("boom", "ValueError", "Traceback ...\nValueError: boom")
    if request == b"abort":
        await context.abort(Code.PERMISSION_DENIED, "chosen by the method")
    if request == b"bug":
        raise KeyError("secret internals")
    return b"ok"


@pytest.fixture(scope="module")
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    servicer = Servicer()
    server = grpc.aio.server(options=server_options())
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(servicer.Unary),
        "Streaming": grpc.unary_stream_rpc_method_handler(servicer.Streaming),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.T", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=channel_options()) as ch:
        yield ch
    await server.stop(None)


async def _unary(channel: grpc.aio.Channel, request: bytes) -> bytes:
    return await channel.unary_unary("/test.T/Unary")(request)


async def _streaming(channel: grpc.aio.Channel, request: bytes) -> list[bytes]:
    return [item async for item in channel.unary_stream("/test.T/Streaming")(request)]


async def _status(call) -> tuple[Code, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), caught.value.details()


async def test_a_capstan_error_keeps_its_code_and_message(channel: grpc.aio.Channel) -> None:
    assert await _unary(channel, b"fine") == b"ok"
    status = await _status(_unary(channel, b"not-found"))
    assert status == (Code.NOT_FOUND, 'deployment "x" not found')


async def test_user_code_error_sends_type_and_message_not_the_traceback(
    channel: grpc.aio.Channel,
) -> None:
    assert await _status(_unary(channel, b"user-code")) == (Code.UNKNOWN, "ValueError: boom")


async def test_a_status_the_method_chose_passes_through(channel: grpc.aio.Channel) -> None:
    status = await _status(_unary(channel, b"abort"))
    assert status == (Code.PERMISSION_DENIED, "chosen by the method")


async def test_anything_else_is_logged_and_answered_internal_plainly(
    channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        status = await _status(_unary(channel, b"bug"))
    assert status == (Code.INTERNAL, "internal error; see the server log")
    [record] = [r for r in caplog.records if r.exc_info]
    assert record.name == __name__
    assert isinstance(record.exc_info[1], KeyError)


async def test_streaming_methods_map_errors_after_their_items(channel: grpc.aio.Channel) -> None:
    assert await _streaming(channel, b"fine") == [b"first", b"ok"]
    call = channel.unary_stream("/test.T/Streaming")(b"not-found")
    assert await call.read() == b"first"
    assert await _status(call.read()) == (Code.NOT_FOUND, 'deployment "x" not found')
    assert (await _status(_streaming(channel, b"bug")))[0] == Code.INTERNAL


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.InvalidSpec("bad"), Code.INVALID_ARGUMENT),
        (errors.NotFound("gone"), Code.NOT_FOUND),
        (errors.AlreadyExists("taken"), Code.ALREADY_EXISTS),
        (errors.VersionConflict("stale"), Code.FAILED_PRECONDITION),
        (errors.Unavailable("down"), Code.UNAVAILABLE),
        (errors.BackPressure("full"), Code.RESOURCE_EXHAUSTED),
        (errors.Unauthenticated("who"), Code.UNAUTHENTICATED),
    ],
)
def test_the_sdk_maps_each_code_back_to_the_same_class(
    error: errors.CapstanError, code: Code
) -> None:
    assert error.code == code
    back = errors.error_for_code(code, error.message)
    assert type(back) is type(error) and back.message == error.message


async def test_errors_carry_error_info_a_program_can_read(channel: grpc.aio.Channel) -> None:
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _unary(channel, b"user-code")
    [detail] = rpc_status.from_call(caught.value).details
    info = error_details_pb2.ErrorInfo()
    assert detail.Unpack(info)
    assert (info.reason, info.domain) == ("USER_CODE_ERROR", "capstan.v1")
    assert info.metadata["exception_type"] == "ValueError"
    mapped = from_rpc_error(caught.value)
    assert isinstance(mapped, UserCodeError) and mapped.exception_type == "ValueError"
    assert str(mapped) == "ValueError: boom"
