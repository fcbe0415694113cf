"""How a replica's log records read: JSON lines, or the process's text
format, each with the standard LogRecord attributes a deployment's
`logging_config.additional_log_standard_attrs` asks for.

As in Ray Serve, JSON lines carry the extra attributes as keys of the
object, and text lines end with them as ` name=value` pairs.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any


def record_attributes(record: logging.LogRecord, names: Sequence[str]) -> dict[str, Any]:
    """The named attributes of `record`; "message" and "asctime" (set only
    while a formatter runs) are worked out here."""
    values = {}
    for name in names:
        if name == "message":
            values[name] = record.getMessage()
        elif name == "asctime":
            values[name] = _asctime(record)
        else:
            values[name] = getattr(record, name, None)
    return values


class JsonFormatter(logging.Formatter):
    """One JSON object per record, for log shippers. "asctime" comes first:
    `capstan logs --since` finds a line's time there."""

    def __init__(self, replica_id: str, deployment: str, extra: Sequence[str] = ()) -> None:
        super().__init__()
        self._fields = {"replica": replica_id, "deployment": deployment}
        self._extra = tuple(extra)

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "asctime": _asctime(record),
            "levelname": record.levelname,
            "name": record.name,
            "message": record.getMessage(),
            **self._fields,
            **record_attributes(record, self._extra),
        }
        if record.exc_info:
            entry["exc_text"] = self.formatException(record.exc_info)
        # default=str: attributes such as `args` may hold anything.
        return json.dumps(entry, default=str)


class TextWithAttributes(logging.Formatter):
    """`base`'s line followed by ` name=value` for each extra attribute."""

    def __init__(self, base: logging.Formatter, extra: Sequence[str]) -> None:
        super().__init__()
        self._base = base
        self._extra = tuple(extra)

    def format(self, record: logging.LogRecord) -> str:
        line = self._base.format(record)
        pairs = record_attributes(record, self._extra).items()
        return line + "".join(f" {name}={value}" for name, value in pairs)


def text_formatter(replica_id: str) -> logging.Formatter:
    """The replica worker's text format (as its process sets it up)."""
    return logging.Formatter(f"%(asctime)s %(levelname)s replica {replica_id}: %(message)s")


def _asctime(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
