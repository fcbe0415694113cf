"""The replica's log formats and how a deployment's logging_config sets
up its process (levels, extra attributes, logs_dir, access lines)."""

from __future__ import annotations

import json
import logging
import pathlib
from collections.abc import Iterator

import pytest

from capstan.internal.v1 import replica_pb2
from capstan.v1 import deployment_pb2
from executors.replica import access_log
from executors.replica.loader import LoadError
from executors.replica.log_format import JsonFormatter, TextWithAttributes, text_formatter
from executors.replica.logs import apply_logging_config, log_file_name


def _record(message: str = "hello %s", *args: object) -> logging.LogRecord:
    return logging.LogRecord(
        "user.code",
        logging.WARNING,
        "/app/model.py",
        42,
        message,
        args or ("world",),
        None,
        func="predict",
    )


def test_json_lines_carry_the_asked_attributes() -> None:
    formatter = JsonFormatter("r1", "Model", ["funcName", "lineno", "process", "args"])
    entry = json.loads(formatter.format(_record()))
    assert entry["message"] == "hello world" and entry["name"] == "user.code"
    assert (entry["funcName"], entry["lineno"]) == ("predict", 42)
    assert isinstance(entry["process"], int)
    assert entry["args"] == ["world"]
    assert (entry["replica"], entry["deployment"]) == ("r1", "Model")


def test_json_lines_start_with_their_time() -> None:
    # `capstan logs --since` reads a line's time from its start.
    line = JsonFormatter("r1", "Model", ["asctime", "message"]).format(_record())
    assert line.startswith('{"asctime": "')
    assert json.loads(line)["message"] == "hello world"


def test_text_lines_end_with_name_value_pairs() -> None:
    formatter = TextWithAttributes(text_formatter("r1"), ["funcName", "lineno"])
    line = formatter.format(_record())
    assert line.endswith("WARNING replica r1: hello world funcName=predict lineno=42")


def _config(**logging_config: object) -> replica_pb2.ReplicaConfig:
    config = replica_pb2.ReplicaConfig(replica_id="r7")
    config.deployment.name = "Model"
    config.deployment.application = "app"
    if logging_config:
        config.deployment.logging_config.CopyFrom(deployment_pb2.LoggingConfig(**logging_config))
    return config


@pytest.fixture
def process_logging() -> Iterator[logging.Logger]:
    """The root logger as a replica process has it, restored afterwards."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    stream = logging.StreamHandler()
    root.handlers = [stream]
    yield root
    apply_logging_config(_config())  # closes a logs_dir file, turns access lines off
    root.handlers = handlers
    root.setLevel(level)


def test_logs_dir_gets_the_replica_log_file(process_logging, tmp_path: pathlib.Path) -> None:
    folder = tmp_path / "made" / "here"
    config = _config(
        encoding="JSON", logs_dir=str(folder), additional_log_standard_attrs=["lineno"]
    )
    apply_logging_config(config)
    apply_logging_config(config)  # again in one process: still one file handler
    logging.getLogger("user.code").info("into the file")
    path = folder / "replica_app_Model_r7.log"
    assert log_file_name(config) == path.name
    [entry] = [json.loads(line) for line in path.read_text().splitlines()]
    assert entry["message"] == "into the file" and isinstance(entry["lineno"], int)
    files = [h for h in process_logging.handlers if isinstance(h, logging.FileHandler)]
    assert len(files) == 1


def test_log_level_filters(process_logging, tmp_path: pathlib.Path) -> None:
    apply_logging_config(_config(log_level="WARNING", logs_dir=str(tmp_path)))
    logging.getLogger("user.code").info("too quiet")
    logging.getLogger("user.code").warning("loud enough")
    text = (tmp_path / "replica_app_Model_r7.log").read_text()
    assert "loud enough" in text and "too quiet" not in text
    assert "WARNING replica r7: loud enough" in text


def test_access_lines_are_off_unless_turned_on(process_logging) -> None:
    apply_logging_config(_config())
    assert not access_log.is_on()
    apply_logging_config(_config(encoding="JSON"))
    assert not access_log.is_on()
    apply_logging_config(_config(enable_access_log=True))
    assert access_log.is_on()
    apply_logging_config(_config(enable_access_log=False))
    assert not access_log.is_on()


def test_an_unwritable_logs_dir_fails_the_load(process_logging, tmp_path: pathlib.Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(LoadError, match="logs_dir"):
        apply_logging_config(_config(logs_dir=str(blocker / "logs")))


def test_access_line_outcomes() -> None:
    frame = replica_pb2.ResponseFrame
    assert access_log.outcome(frame(id=1, done=True)) == "OK"
    assert (
        access_log.outcome(frame(id=1, done=True, http=replica_pb2.HttpResponse(status=404)))
        == "404"
    )
    assert access_log.outcome(frame(error=replica_pb2.Error(code=1))) == "CANCELLED"
    assert access_log.outcome(frame(error=replica_pb2.Error(code=2))) == "ERROR"
    call = replica_pb2.RequestFrame(invocation=replica_pb2.Invocation(method_name="predict"))
    assert access_log.label(call) == "CALL predict"
    get = replica_pb2.RequestFrame(http=replica_pb2.HttpRequest(method="GET", path="/a"))
    assert access_log.label(get) == "GET /a"
    get.http.headers.add(name=b"x-request-id", value=b"abc-1")
    assert access_log.label(get) == "GET /a [abc-1]"
