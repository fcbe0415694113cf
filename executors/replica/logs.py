"""A deployment's `logging_config` applied to its replica's process: the
level of every logger, and records as JSON lines when encoding is "JSON"
(one object per line: time, level, logger, message, replica, deployment)."""

from __future__ import annotations

import json
import logging
import time

from capstan.internal.v1 import replica_pb2


class JsonFormatter(logging.Formatter):
    """One JSON object per record, for log shippers."""

    def __init__(self, replica_id: str, deployment: str) -> None:
        super().__init__()
        self._fields = {"replica": replica_id, "deployment": deployment}

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "asctime": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
            "levelname": record.levelname,
            "name": record.name,
            "message": record.getMessage(),
            **self._fields,
        }
        if record.exc_info:
            entry["exc_text"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def apply_logging_config(config: replica_pb2.ReplicaConfig) -> None:
    """Sets the root logger's level and format from the deployment's
    logging_config; leaves the defaults when it has none."""
    spec = config.deployment
    if not spec.HasField("logging_config"):
        return
    settings = spec.logging_config
    root = logging.getLogger()
    root.setLevel(settings.log_level or "INFO")
    if settings.encoding == "JSON":
        formatter = JsonFormatter(config.replica_id, spec.name)
        for handler in root.handlers:
            handler.setFormatter(formatter)
