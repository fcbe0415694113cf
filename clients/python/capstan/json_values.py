"""Python values to and from google.protobuf.Value, ListValue and Struct: the
JSON that capstan.v1 carries (arguments, results, user_config).

A Value holds every number as a double, so a whole number comes back as an
`int` (what `json.loads` would give for the same JSON text): a method that
takes `n` and does `range(n)` works whether a Python or a Node client sent it.

Part of the core: it imports nothing of Capstan but the errors.
"""

from __future__ import annotations

import json
import math
from typing import Any

from google.protobuf import json_format, struct_pb2

from capstan.errors import InvalidSpec
from capstan.v1 import controlplane_pb2, deployment_pb2

# Doubles hold every integer up to 2**53 exactly; past it a whole number
# stays a float, as it would be rounded anyway.
_EXACT_INT = 2**53

JsonMessage = struct_pb2.Value | struct_pb2.ListValue | struct_pb2.Struct


def to_python(message: JsonMessage, field: str = "value") -> Any:
    """The Python value (dict, list, str, float, int, bool or None) of a
    Value, ListValue or Struct. Raises `InvalidSpec` naming `field` for a
    number JSON cannot write (NaN, Infinity), which a client may still send."""
    try:
        return _whole_numbers(json_format.MessageToDict(message))
    except ValueError as error:
        raise InvalidSpec(f"{field} is not JSON: {error}", field) from None


def to_json_text(message: JsonMessage, field: str = "value") -> str:
    """The message as compact JSON text with sorted keys: the same value
    always reads the same (a Struct's keys have no order of their own)."""
    return json.dumps(to_python(message, field), sort_keys=True, separators=(",", ":"))


def to_value(value: Any, field: str) -> struct_pb2.Value:
    """`value` as a Value. Raises `InvalidSpec` naming `field` when JSON
    cannot carry it (a set, an object, NaN)."""
    message = struct_pb2.Value()
    try:
        json_format.ParseDict(_plain(value, field), message)
    except json_format.ParseError as error:
        raise InvalidSpec(f"{field} must be JSON-serialisable: {error}", field) from None
    return message


def is_plain_json(value: Any) -> bool:
    """Whether `value` survives a trip through a Value unchanged, types
    included (no tuples, no big or non-finite numbers, no floats that would
    come back as ints)."""
    try:
        return _same(to_python(to_value(value, "value")), value)
    except InvalidSpec:
        return False


def arguments_of(
    args: list[Any] | tuple[Any, ...], kwargs: dict[str, Any], field: str
) -> deployment_pb2.Arguments:
    """capstan.v1.Arguments holding `args` and `kwargs`; unset parts when empty."""
    message = deployment_pb2.Arguments()
    if args:
        message.args.CopyFrom(to_value(list(args), f"{field}.args").list_value)
    if kwargs:
        message.kwargs.CopyFrom(to_value(dict(kwargs), f"{field}.kwargs").struct_value)
    return message


def arguments_to_python(
    arguments: deployment_pb2.Arguments, field: str = "arguments"
) -> tuple[list[Any], dict[str, Any]]:
    """The positional and keyword arguments capstan.v1.Arguments holds;
    `InvalidSpec` naming `field.args` or `field.kwargs` when not JSON."""
    args = to_python(arguments.args, f"{field}.args") if arguments.HasField("args") else []
    kwargs = to_python(arguments.kwargs, f"{field}.kwargs") if arguments.HasField("kwargs") else {}
    return args, kwargs


def readable_deployment(deployment: controlplane_pb2.Deployment) -> dict[str, Any]:
    """A deployment as proto JSON for people (`capstan status -o json`, the
    dashboard): without the SDK's payloads (pickles), which mean nothing to
    a reader and whose types proto JSON may not know."""
    shown = controlplane_pb2.Deployment()
    shown.CopyFrom(deployment)
    shown.spec.code.ClearField("sdk_object")
    shown.spec.ClearField("sdk_init_arguments")
    return json_format.MessageToDict(shown, preserving_proto_field_name=True)


def _plain(value: Any, field: str) -> Any:
    # json first: it refuses what JSON cannot hold, and turns tuples into lists.
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise InvalidSpec(f"{field} must be JSON-serialisable: {error}", field) from None


def _whole_numbers(value: Any) -> Any:
    if isinstance(value, float):
        is_whole = math.isfinite(value) and value.is_integer() and abs(value) <= _EXACT_INT
        return int(value) if is_whole else value
    if isinstance(value, list):
        return [_whole_numbers(item) for item in value]
    if isinstance(value, dict):
        return {key: _whole_numbers(item) for key, item in value.items()}
    return value


def _same(got: Any, sent: Any) -> bool:
    if type(got) is not type(sent):
        return False
    if isinstance(sent, list):
        return len(got) == len(sent) and all(map(_same, got, sent))
    if isinstance(sent, dict):
        return got.keys() == sent.keys() and all(_same(got[k], sent[k]) for k in sent)
    return got == sent
