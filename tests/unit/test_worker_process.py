"""The worker-process protocol the local and SSH executors share: where a
replica's files live, its command line, how a worker is recognised, and
what its ready file says."""

from __future__ import annotations

import json
import pathlib

import pytest

from executors.base import ReplicaStartError
from executors.worker_process import Ready, WorkerFiles, command, is_command_of, write_ready

FILES = WorkerFiles.under("/srv/capstan", "hello-1")


def test_files_are_laid_out_under_one_folder() -> None:
    assert (
        WorkerFiles(
            config="/srv/capstan/replicas/hello-1.config.pb",
            ready="/srv/capstan/replicas/hello-1.json",
            log="/srv/capstan/logs/hello-1.log",
            working_dir="/srv/capstan/working_dirs/hello-1",
        )
        == FILES
    )


def test_the_command_line_names_config_ready_file_and_interface() -> None:
    assert command("/venv/bin/python", FILES, "10.0.0.7") == [
        "/venv/bin/python", "-m", "executors.replica",
        "--config", FILES.config, "--ready-file", FILES.ready, "--host", "10.0.0.7",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("cmdline", "is_worker"),
    [
        (command("python3", FILES, "127.0.0.1"), True),
        # Another replica whose id ends the same way.
        (command("python3", WorkerFiles.under("/srv", "other-hello-1"), "::1"), False),
        (command("python3", WorkerFiles.under("/srv", "hello-10"), "::1"), False),
        (["sleep", "100"], False),
        # A zombie's command line reads empty.
        ([], False),
    ],
)
def test_a_worker_is_recognised_by_its_command_line(cmdline: list[str], is_worker: bool) -> None:
    assert is_command_of(cmdline, "hello-1") is is_worker


def test_ready_file_round_trip(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "hello-1.json"
    ready = Ready("hello-1", "127.0.0.1:5000", 4242, "abc")
    write_ready(path, ready)
    assert Ready.parse(path.read_text()) == ready
    assert [p.name for p in tmp_path.iterdir()] == ["hello-1.json"]


def test_a_failed_start_reads_as_the_users_error(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "hello-1.json"
    write_ready(path, "constructor of Hello raised ValueError: boom")
    with pytest.raises(ReplicaStartError, match=r"^constructor of Hello raised ValueError: boom$"):
        Ready.parse(path.read_bytes())


@pytest.mark.parametrize(
    "content",
    [
        {"replica_id": "x", "address": "a:1", "nonce": "n"},
        {"replica_id": "x", "address": "a:1", "nonce": "n", "pid": "12"},
        {"replica_id": 3, "address": "a:1", "nonce": "n", "pid": 12},
        ["not", "an", "object"],
    ],
)
def test_a_file_no_worker_wrote_is_refused(content: object) -> None:
    with pytest.raises(ValueError, match="not a ready file"):
        Ready.parse(json.dumps(content))
