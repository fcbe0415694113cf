"""The bounds of a spec, as deployment.proto documents them: every number
finite and in range, every text and the whole spec small. A value past them
is a mistake or an attack (10**9 replicas, a wait of 1e308 s, JSON nested a
million deep), and refusing it at the edge is what keeps one apply from
taking the control plane down for everyone.

The replica ceiling here is a hard one, for the constructor; the cluster's
own maximum (Settings.max_replicas_per_deployment) is checked at the edge.
"""

from __future__ import annotations

import json
import math

from capstan.errors import InvalidSpec

# Every duration: at most one day.
MAX_DURATION_S = 86_400.0
MAX_REPLICAS = 100_000
MAX_CONCURRENT_QUERIES = 100_000
MAX_QUEUED_REQUESTS = 1_000_000
# Autoscaling's upscaling_factor / downscaling_factor.
MAX_SCALING_FACTOR = 100.0
MAX_USER_CONFIG_BYTES = 1 << 20
MAX_JSON_DEPTH = 100
MAX_VERSION_CHARS = 256
# One deployment spec on the wire; an application holds several.
MAX_SPEC_BYTES = 4 << 20
MAX_APPLICATION_BYTES = 16 << 20


def require_between(
    value: float, field: str, low: float, high: float, *, is_low_open: bool = False
) -> None:
    """`value` is finite, above `low` (or at it, unless `is_low_open`) and at
    most `high`; otherwise InvalidSpec naming `field` and the range."""
    # An int is always finite (and may be too big for a float to hold).
    is_finite = isinstance(value, int) or math.isfinite(value)
    above = value > low if is_low_open else value >= low
    if not (is_finite and above and value <= high):
        sign = ">" if is_low_open else ">="
        raise InvalidSpec(f"{field} must be {sign} {low:g} and <= {high:g}, got {value!r}", field)


def require_size(size: int, field: str, most: int) -> None:
    """A text or message of `size` bytes fits in `most`."""
    if size > most:
        raise InvalidSpec(f"{field} is {size} bytes; at most {most} bytes are allowed", field)


def parse_json(text: str | bytes, field: str, most_bytes: int) -> object:
    """The JSON value of `text`, at most `most_bytes` long and nested at most
    MAX_JSON_DEPTH deep; otherwise InvalidSpec naming `field`."""
    size = len(text.encode() if isinstance(text, str) else text)
    require_size(size, field, most_bytes)
    try:
        value = json.loads(text)
    except RecursionError:
        raise InvalidSpec(f"{field} is nested deeper than {MAX_JSON_DEPTH} levels", field) from None
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidSpec(f"{field} is not valid JSON: {error}", field) from None
    require_depth(value, field)
    return value


def require_depth(value: object, field: str) -> None:
    """`value` (lists and dicts) is nested at most MAX_JSON_DEPTH deep."""
    if _depth(value) > MAX_JSON_DEPTH:
        raise InvalidSpec(f"{field} is nested deeper than {MAX_JSON_DEPTH} levels", field)


def _depth(value: object) -> int:
    # A loop, not recursion: the point is that no input reaches the stack limit.
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth)
            pending.extend((child, depth + 1) for child in item)
    return deepest
