"""Checks a deployment's LoggingConfig: what the replica worker can apply."""

from __future__ import annotations

import logging

from capstan.errors import InvalidSpec
from capstan.v1 import deployment_pb2

ENCODINGS = ("", "TEXT", "JSON")
LEVELS = ("", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# What a LogRecord has of its own; replica log lines may add any of these.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({})))
_MAX_PATH_CHARS = 4096


def check_logging_config(config: deployment_pb2.LoggingConfig) -> None:
    """Raises `InvalidSpec` naming the first bad field."""
    _check(
        config.encoding in ENCODINGS,
        "encoding",
        f'must be "TEXT" or "JSON", not {config.encoding!r}',
    )
    _check(
        config.log_level in LEVELS,
        "log_level",
        f"must be one of {', '.join(LEVELS[1:])}, not {config.log_level!r}",
    )
    _check(
        len(config.logs_dir) <= _MAX_PATH_CHARS and "\0" not in config.logs_dir,
        "logs_dir",
        f"must be a path of at most {_MAX_PATH_CHARS} characters",
    )
    for name in config.additional_log_standard_attrs:
        _check(
            name in _RECORD_ATTRIBUTES,
            "additional_log_standard_attrs",
            f"names {name!r}, which is not a standard LogRecord attribute",
        )


def _check(condition: bool, name: str, problem: str) -> None:
    if not condition:
        field = f"logging_config.{name}"
        raise InvalidSpec(f"{field} {problem}", field)
