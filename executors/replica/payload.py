"""Arguments in and results out, as JSON or cloudpickle (see
capstan.internal.v1's `Encoding`).

JSON is what crosses languages; pickle is for Python-to-Python calls. Both
directions are on every request's path, so they stay plain functions.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterable, Mapping
from typing import Any

from capstan.errors import InternalError, InvalidSpec
from capstan.internal.v1 import replica_pb2

PICKLE = replica_pb2.ENCODING_PICKLE
JSON = replica_pb2.ENCODING_JSON


def decode_arguments(
    arguments: replica_pb2.EncodedArguments, field: str = "arguments"
) -> tuple[tuple[Any, ...] | list[Any], dict[str, Any]]:
    """Positional and keyword arguments; empty bytes mean none. Raises
    `InvalidSpec` naming `field.args` or `field.kwargs` when malformed."""
    raw_args, raw_kwargs = arguments.args, arguments.kwargs
    if not raw_args and not raw_kwargs:
        return (), {}
    if arguments.encoding == PICKLE:
        args = _unpickle(raw_args, f"{field}.args") if raw_args else ()
        kwargs = _unpickle(raw_kwargs, f"{field}.kwargs") if raw_kwargs else {}
    else:
        args = _parse_json(raw_args, f"{field}.args") if raw_args else ()
        kwargs = _parse_json(raw_kwargs, f"{field}.kwargs") if raw_kwargs else {}
    if not isinstance(args, list | tuple):
        raise InvalidSpec(f"{field}.args must be a list, got {type(args).__name__}")
    if not isinstance(kwargs, dict):
        raise InvalidSpec(f"{field}.kwargs must be a mapping, got {type(kwargs).__name__}")
    return args, kwargs


def encode_result(value: Any, encoding: int, what: str) -> replica_pb2.Payload:
    """`value` as a Payload in the caller's encoding (unset means JSON).
    Raises `InternalError` when JSON cannot represent it."""
    if encoding == PICKLE:
        return replica_pb2.Payload(encoding=PICKLE, data=_pickle(value, what))
    try:
        data = json.dumps(value, separators=(",", ":"), default=jsonable).encode()
    except (TypeError, ValueError) as error:
        raise InternalError(f"result of {what} is not JSON-serialisable: {error}") from error
    return replica_pb2.Payload(encoding=JSON, data=data)


def jsonable(value: Any) -> Any:
    """What JSON makes of a value `json` cannot write (its `default` hook), as
    Ray Serve does: FastAPI's `jsonable_encoder` when FastAPI is installed;
    else mappings (starlette's `QueryParams`, `Headers`) as objects and other
    iterables as arrays. Raises `TypeError` for anything else."""
    try:
        from fastapi.encoders import jsonable_encoder  # deferred: only odd results get here
    except ImportError:
        jsonable_encoder = None
    if jsonable_encoder is not None:
        return jsonable_encoder(value)
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Iterable) and not isinstance(value, str | bytes):
        return list(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _parse_json(data: bytes, field: str) -> Any:
    try:
        return json.loads(data)
    except ValueError as error:
        raise InvalidSpec(f"{field} is not valid JSON: {error}") from error


def _unpickle(data: bytes, field: str) -> Any:
    # pickle.loads reads cloudpickle's output and imports cloudpickle only
    # when the data needs it.
    try:
        return pickle.loads(data)
    except Exception as error:
        raise InvalidSpec(
            f"{field} cannot be unpickled: {type(error).__name__}: {error}"
        ) from error


def _pickle(value: Any, what: str) -> bytes:
    import cloudpickle  # deferred: slow to import, and JSON callers never need it

    try:
        return cloudpickle.dumps(value)
    except Exception as error:
        raise InternalError(f"result of {what} cannot be pickled: {error}") from error
