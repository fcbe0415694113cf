"""One error hierarchy for Capstan, each class carrying its gRPC status code.

Servers raise these and one decorator at the gRPC edge (`answers_errors`)
turns them into a status; the SDK turns a status back into the same class,
so users catch `capstan.NotFound`, never a gRPC type.

Part of the core every package may import: it imports nothing of Capstan.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

# google.rpc.ErrorInfo.domain of every error Capstan sends.
DOMAIN = "capstan.v1"


class CapstanError(Exception):
    """Base of every error Capstan raises on purpose.

    On the wire it is a gRPC status with this class's code and `details`,
    plus a `google.rpc.ErrorInfo` whose `reason` names the class
    (INVALID_SPEC, NOT_FOUND, USER_CODE_ERROR, ...) and whose `metadata`
    carries what a program may want (e.g. `exception_type`), so clients in
    any language read errors without parsing messages."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def details(self) -> str:
        """What a gRPC status carries for this error: safe to send any caller."""
        return self.message

    @classmethod
    def reason(cls) -> str:
        """The ErrorInfo reason: the class name in UPPER_SNAKE_CASE."""
        return re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).upper()

    def metadata(self) -> dict[str, str]:
        """ErrorInfo metadata for this error (strings only)."""
        return {}

    def more_details(self) -> list[Message]:
        """Status details beyond the ErrorInfo (google.rpc messages)."""
        return []

    def to_status(self) -> grpc.Status:
        """The gRPC status (with rich details) that stands for this error."""
        info = error_details_pb2.ErrorInfo(
            reason=self.reason(), domain=DOMAIN, metadata=self.metadata()
        )
        details = []
        for detail in (info, *self.more_details()):
            packed = any_pb2.Any()
            packed.Pack(detail)
            details.append(packed)
        code = getattr(code_pb2, self.code.name)
        message = status_pb2.Status(code=code, message=self.details, details=details)
        return rpc_status.to_status(message)


class InvalidSpec(CapstanError):
    """A deployment spec or request is malformed; the message names the field.

    `field` is the field's path in the protos' names (`replica_options.num_cpus`),
    sent as a google.rpc.BadRequest field violation so that a program can
    tell which field to fix; empty when no one field is to blame."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field

    def more_details(self) -> list[Message]:
        if not self.field:
            return []
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=self.field, description=self.message
        )
        return [error_details_pb2.BadRequest(field_violations=[violation])]


class NotFound(CapstanError):
    """The named deployment (or method, or route) does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(CapstanError):
    """Something unique is taken, such as a route prefix."""

    code = grpc.StatusCode.ALREADY_EXISTS


class VersionConflict(CapstanError):
    """prev_version does not match the stored version; nothing was changed."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class DeployFailed(CapstanError):
    """A rollout failed (user code raised); the previous version keeps serving."""

    code = grpc.StatusCode.ABORTED


class Unavailable(CapstanError):
    """No live replica (or server) can take the request now; retrying may help."""

    code = grpc.StatusCode.UNAVAILABLE


class BackPressure(CapstanError):
    """Every replica is at max_concurrent_queries and the wait queue is full."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(CapstanError):
    """The call did not finish in the time allowed."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(CapstanError):
    """The call was cancelled before it finished."""

    code = grpc.StatusCode.CANCELLED


class Unauthenticated(CapstanError):
    """No bearer token, or a wrong one."""

    code = grpc.StatusCode.UNAUTHENTICATED


class UserCodeError(CapstanError):
    """The deployment's own code raised while handling a call.

    `exception_type` is the user exception's class name and `remote_traceback`
    its traceback as the replica saw it.
    """

    code = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        exception_type: str = "",
        remote_traceback: str = "",
        deployment: str = "",
    ) -> None:
        # One "Type: " prefix, whoever built the message (the replica does).
        if exception_type and not message.startswith(f"{exception_type}:"):
            message = f"{exception_type}: {message}"
        super().__init__(message)
        self.exception_type = exception_type
        self.remote_traceback = remote_traceback
        # The deployment whose code raised; "" when not known.
        self.deployment = deployment

    @property
    def details(self) -> str:
        # The replica's traceback stays behind: callers see the message, which
        # already starts with the exception type ("ValueError: ...").
        return self.message

    def metadata(self) -> dict[str, str]:
        found = {"exception_type": self.exception_type, "deployment": self.deployment}
        return {key: value for key, value in found.items() if value}

    def __str__(self) -> str:
        if self.remote_traceback:
            return f"{self.message}\n\nTraceback in the replica:\n{self.remote_traceback}"
        return self.message


class InternalError(CapstanError):
    """Capstan itself failed; the server log has the details."""


_BY_CODE: dict[grpc.StatusCode, type[CapstanError]] = {
    cls.code: cls
    for cls in (
        InvalidSpec,
        NotFound,
        AlreadyExists,
        VersionConflict,
        DeployFailed,
        Unavailable,
        BackPressure,
        DeadlineExceeded,
        Cancelled,
        Unauthenticated,
        UserCodeError,
        InternalError,
    )
}


def error_for_code(code: grpc.StatusCode | int, message: str) -> CapstanError:
    """The Capstan error for a gRPC status code (given as enum or number)."""
    if isinstance(code, int):
        code = _STATUS_BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN)
    return _BY_CODE.get(code, InternalError)(message)


def from_rpc_error(error: grpc.RpcError) -> CapstanError:
    """The Capstan error a failed gRPC call stands for: the class its
    ErrorInfo names when it carries one, else the one for its code."""
    code = error.code()  # type: ignore[attr-defined]
    details = error.details() or code.name  # type: ignore[attr-defined]
    if code == grpc.StatusCode.UNAVAILABLE and "failed to connect" in details.lower():
        details = f"cannot reach the Capstan server: {details}"
    details_sent = _details(error)
    info = details_sent.get(error_details_pb2.ErrorInfo)
    cls = _BY_REASON.get(info.reason) if info is not None and info.domain == DOMAIN else None
    if cls is UserCodeError:
        metadata = info.metadata
        return UserCodeError(
            details,
            metadata.get("exception_type", ""),
            deployment=metadata.get("deployment", ""),
        )
    if cls is InvalidSpec:
        bad_request = details_sent.get(error_details_pb2.BadRequest)
        violations = bad_request.field_violations if bad_request is not None else ()
        return InvalidSpec(details, violations[0].field if violations else "")
    return cls(details) if cls is not None else error_for_code(code, details)


def _details(error: grpc.RpcError) -> dict[type, Message]:
    """The google.rpc details (ErrorInfo, BadRequest) a status carries, by type."""
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except (ValueError, AttributeError):  # details that do not match the status
        return {}
    found: dict[type, Message] = {}
    for detail in status.details if status is not None else ():
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest):
            message = kind()
            if kind not in found and detail.Unpack(message):
                found[kind] = message
    return found


_STATUS_BY_NUMBER = {status.value[0]: status for status in grpc.StatusCode}
_BY_REASON = {cls.reason(): cls for cls in (*_BY_CODE.values(), CapstanError)}


# What a caller sees when a server fails in a way it did not mean to; the
# traceback goes to the server's log only.
_INTERNAL_DETAILS = "internal error; see the server log"

_Method = TypeVar("_Method", bound=Callable[..., Any])


async def abort(context: grpc.aio.ServicerContext, error: CapstanError) -> NoReturn:
    """Ends the call with `error`'s status: code, details and ErrorInfo."""
    status = error.to_status()
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("unreachable: context.abort raises")


def answers_errors(method: _Method) -> _Method:
    """Wraps a grpc.aio servicer method (a coroutine, or an async generator for
    server streaming): a CapstanError becomes its status, anything unexpected
    is logged with its traceback and answered INTERNAL with a plain message.
    A status the method chose itself (`context.abort`) passes through."""
    log = logging.getLogger(method.__module__)
    name = method.__qualname__

    async def answer(error: Exception, context: grpc.aio.ServicerContext) -> NoReturn:
        if isinstance(error, grpc.aio.AbortError):
            raise error
        if isinstance(error, CapstanError):
            await abort(context, error)
        log.error("%s failed", name, exc_info=error)
        await context.abort(grpc.StatusCode.INTERNAL, _INTERNAL_DETAILS)
        raise AssertionError("unreachable: context.abort raises")

    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def streaming(self: Any, request: Any, context: Any) -> AsyncIterator[Any]:
            try:
                async for item in method(self, request, context):
                    yield item
            except Exception as error:
                await answer(error, context)

        return streaming  # type: ignore[return-value]

    @functools.wraps(method)
    async def unary(self: Any, request: Any, context: Any) -> Any:
        try:
            return await method(self, request, context)
        except Exception as error:
            await answer(error, context)

    return unary  # type: ignore[return-value]
