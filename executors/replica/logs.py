"""A deployment's `logging_config` applied to its replica's process, as Ray
Serve applies it to a replica actor:

- log_level: the level of the root logger (so of the user's loggers too);
- encoding "JSON": one object per line (time, level, logger, message,
  replica, deployment); "TEXT" keeps the process's text lines;
- additional_log_standard_attrs: those LogRecord attributes added to each
  line, JSON or text;
- enable_access_log true: one line per request (`access_log`); off unless set;
- logs_dir: the replica also writes its log to
  `<logs_dir>/replica_<app>_<deployment>_<replica_id>.log` on its own
  machine, as Ray Serve writes its replica log file in logs_dir on the
  actor's node. Its output still goes where the executor keeps it, which
  is what `capstan logs` reads.
"""

from __future__ import annotations

import logging
import os
import pathlib

from capstan.internal.v1 import replica_pb2
from capstan.v1 import deployment_pb2
from executors.replica import access_log
from executors.replica.loader import LoadError
from executors.replica.log_format import JsonFormatter, TextWithAttributes, text_formatter

# Loggers whose handlers a replica process writes through: the root's, and
# the one the Ray executor gives "capstan" in its actors.
_LOGGERS = ("", "capstan")


class _LogsDirHandler(logging.FileHandler):
    """The file in logs_dir; told apart so a second replica started in the
    same process (tests) replaces it instead of adding another."""


def apply_logging_config(config: replica_pb2.ReplicaConfig) -> None:
    """Sets levels, formats and files from the deployment's logging_config;
    leaves the defaults (INFO as text, no access lines) when it has none.

    Raises `LoadError` when logs_dir cannot be written."""
    spec = config.deployment
    settings = spec.logging_config  # all defaults when the spec has none
    # Off unless asked for, unlike Ray Serve: the proxy already logs every
    # HTTP request, and a line per request here cost the hello benchmark
    # 0.03 to 0.09 ms of CPU per request (15 to 30% of its throughput).
    access_log.enable(settings.HasField("enable_access_log") and settings.enable_access_log)
    root = logging.getLogger()
    _remove_logs_dir_handlers(root)
    if not spec.HasField("logging_config"):
        return
    root.setLevel(settings.log_level or "INFO")
    formatter = _formatter(config, settings)
    if settings.logs_dir:
        root.addHandler(_logs_dir_handler(config, settings.logs_dir))
    for name in _LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if formatter is not None:
                handler.setFormatter(formatter)
            elif isinstance(handler, _LogsDirHandler):
                handler.setFormatter(text_formatter(config.replica_id))


def log_file_name(config: replica_pb2.ReplicaConfig) -> str:
    """Ray Serve's name for a replica's log file."""
    spec = config.deployment
    parts = ("replica", spec.application, spec.name, config.replica_id)
    return "_".join(part for part in parts if part) + ".log"


def _formatter(
    config: replica_pb2.ReplicaConfig, settings: deployment_pb2.LoggingConfig
) -> logging.Formatter | None:
    """The format every handler gets; None: each keeps its own."""
    extra = list(settings.additional_log_standard_attrs)
    if settings.encoding == "JSON":
        return JsonFormatter(config.replica_id, config.deployment.name, extra)
    if extra:
        return TextWithAttributes(text_formatter(config.replica_id), extra)
    return None


def _logs_dir_handler(config: replica_pb2.ReplicaConfig, logs_dir: str) -> logging.Handler:
    folder = pathlib.Path(os.path.expanduser(logs_dir))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return _LogsDirHandler(folder / log_file_name(config), encoding="utf-8")
    except OSError as error:
        raise LoadError(
            f"logging_config.logs_dir {logs_dir!r} cannot hold the replica's log: {error}"
        ) from error


def _remove_logs_dir_handlers(root: logging.Logger) -> None:
    for handler in list(root.handlers):
        if isinstance(handler, _LogsDirHandler):
            root.removeHandler(handler)
            handler.close()
