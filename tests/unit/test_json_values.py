"""Python values to and from google.protobuf.Value: what goes as JSON, what
comes back, what is refused."""

from __future__ import annotations

import math

import pytest
from google.protobuf import struct_pb2

from capstan.errors import InvalidSpec
from capstan.json_values import (
    arguments_of,
    arguments_to_python,
    is_plain_json,
    to_python,
    to_value,
)
from capstan.v1 import deployment_pb2


@pytest.mark.parametrize(
    ("value", "is_plain"),
    [
        ("Ada", True),
        ({"n": 1, "xs": [1.5, None, True, "s"]}, True),
        ([], True),
        (2**53, True),
        (2**60, False),  # a double would round it
        (1.0, False),  # would come back as the int 1
        ((1, 2), False),  # would come back as a list
        ({1: "a"}, False),  # keys become strings
        (math.nan, False),
        (object(), False),
    ],
)
def test_plain_json_survives_the_trip_unchanged(value: object, is_plain: bool) -> None:
    assert is_plain_json(value) is is_plain


def test_whole_numbers_come_back_as_ints() -> None:
    assert to_python(to_value({"n": 3, "x": 2.5, "deep": [[7]]}, "v")) == {
        "n": 3,
        "x": 2.5,
        "deep": [[7]],
    }


def test_what_json_cannot_carry_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidSpec, match="user_config must be JSON-serialisable") as caught:
        to_value({"a": {1, 2}}, "user_config")
    assert caught.value.field == "user_config"
    with pytest.raises(InvalidSpec, match=r"arguments\.args is not JSON") as caught:
        arguments_to_python(_arguments_holding(struct_pb2.Value(number_value=math.inf)))
    assert caught.value.field == "arguments.args"


def test_arguments_round_trip_and_unset_means_none() -> None:
    message = arguments_of(("Ada",), {"punct": "?"}, "arguments")
    assert arguments_to_python(message) == (["Ada"], {"punct": "?"})
    empty = arguments_of((), {}, "arguments")
    assert not empty.HasField("args") and arguments_to_python(empty) == ([], {})


def _arguments_holding(value: struct_pb2.Value) -> deployment_pb2.Arguments:
    message = arguments_of((), {}, "arguments")
    message.args.values.append(value)
    return message
