"""The replica worker as a process: the protocol the local and SSH executors
share, whichever machine the process runs on.

Every worker keeps its files under one folder (the local executor's state
folder, or an SSH host's workdir):

    replicas/<replica_id>.config.pb   the ReplicaConfig the worker was given
    replicas/<replica_id>.json        its ready file: address, pid, nonce
    logs/<replica_id>.log             its stdout and stderr
    working_dirs/<replica_id>/        its copy of runtime_env.working_dir (SSH)

A pid alone is not an identity (pids are reused), so a process counts as a
replica's worker only while its command line still names that replica's
config file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import pathlib
import posixpath
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from executors.base import ExecutorError, ReplicaStartError

log = logging.getLogger("capstan.executors")

WORKER_MODULE = "executors.replica"
# Seconds between looks at a process or a ready file.
POLL_S = 0.02
# How long a SIGKILLed worker may take to be gone.
_KILL_WAIT_S = 5.0


@dataclasses.dataclass(frozen=True)
class WorkerFiles:
    """Where one replica's files live (absolute POSIX paths)."""

    config: str
    ready: str
    log: str
    working_dir: str

    @classmethod
    def under(cls, root: str, replica_id: str) -> WorkerFiles:
        return cls(
            config=posixpath.join(root, "replicas", f"{replica_id}.config.pb"),
            ready=posixpath.join(root, "replicas", f"{replica_id}.json"),
            log=posixpath.join(root, "logs", f"{replica_id}.log"),
            working_dir=posixpath.join(root, "working_dirs", replica_id),
        )


def command(python: str, files: WorkerFiles, host: str) -> list[str]:
    """The worker's command line: serve on `host`, then write the ready file."""
    return [
        python, "-m", WORKER_MODULE,
        "--config", files.config, "--ready-file", files.ready, "--host", host,
    ]  # fmt: skip


def is_command_of(cmdline: Sequence[str], replica_id: str) -> bool:
    """Whether a process's command line is the worker of `replica_id`. A
    zombie's (exited, not yet reaped) is empty, so it is not."""
    suffix = "/" + posixpath.basename(WorkerFiles.under("/", replica_id).config)
    return any(arg.endswith(suffix) for arg in cmdline)


@dataclasses.dataclass(frozen=True)
class Ready:
    """The ready file of a worker that serves; `tls`: it serves TLS."""

    replica_id: str
    address: str
    pid: int
    nonce: str
    tls: bool = False

    @classmethod
    def parse(cls, text: str | bytes) -> Ready:
        """Raises `ReplicaStartError` for a worker whose user code failed, and
        `ValueError` for a file no worker wrote."""
        record = json.loads(text)
        if isinstance(record, dict) and "error" in record:
            raise ReplicaStartError(str(record["error"]))
        if not isinstance(record, dict) or not isinstance(record.get("pid"), int):
            raise ValueError(f"not a ready file: {text[:200]!r}")
        fields = ("replica_id", "address", "nonce")
        if not all(isinstance(record.get(name), str) for name in fields):
            raise ValueError(f"not a ready file: {text[:200]!r}")
        tls = record.get("tls") is True
        return cls(record["replica_id"], record["address"], record["pid"], record["nonce"], tls)


def write_ready(path: pathlib.Path, record: Ready | str) -> None:
    """The worker's side: its address, or the error (a string) its user code
    raised. Written then renamed, so a reader never sees half a file."""
    content = {"error": record} if isinstance(record, str) else dataclasses.asdict(record)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(content))
    os.replace(partial, path)


class Processes(Protocol):
    """Questions about processes on the machine where workers run."""

    async def is_worker(self, pid: int, replica_id: str) -> bool:
        """Whether `pid` is alive and its command line is the worker of `replica_id`."""

    async def signal_group(self, pid: int, signal_name: str) -> None:
        """Sends SIGTERM or SIGKILL ("TERM", "KILL") to the worker's process
        group (it leads its own session); a process that is gone is fine."""


async def wait_ready(
    read: Callable[[], Awaitable[str | bytes | None]],
    is_running: Callable[[], Awaitable[bool]],
    timeout_s: float,
    where: str,
    log_tail: Callable[[], Awaitable[str]],
) -> Ready:
    """The ready file of the worker `where` names ("replica x on host a")
    once it serves. Raises `ReplicaStartError` when its user code fails or
    it exits first, and `ExecutorError` (retryable) when it is not ready
    within `timeout_s`; both end with the tail of its log."""
    try:
        async with asyncio.timeout(timeout_s):
            ready = await _poll_ready(read, is_running)
    except TimeoutError:
        message = f"{where} was not ready within {timeout_s:g}s"
        raise ExecutorError(f"{message}; {await log_tail()}") from None
    if ready is None:
        raise ReplicaStartError(f"{where} exited before it was ready; {await log_tail()}")
    return ready


async def _poll_ready(
    read: Callable[[], Awaitable[str | bytes | None]], is_running: Callable[[], Awaitable[bool]]
) -> Ready | None:
    while (text := await read()) is None:
        if not await is_running():
            # It may have written the file just before exiting.
            text = await read()
            return None if text is None else Ready.parse(text)
        await asyncio.sleep(POLL_S)
    return Ready.parse(text)


async def wait_gone(processes: Processes, pid: int, replica_id: str, timeout_s: float) -> bool:
    """Waits up to `timeout_s` for the worker to exit; whether it did. It
    may not be our child, so there is nothing to wait on but its pid."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                if not await processes.is_worker(pid, replica_id):
                    return True
                await asyncio.sleep(POLL_S)
    except TimeoutError:
        return False


async def terminate(processes: Processes, pid: int, replica_id: str, timeout_s: float) -> None:
    """SIGTERM to the worker's group, then SIGKILL after `timeout_s`.
    Raises `ExecutorError` if the worker outlives SIGKILL."""
    if not await processes.is_worker(pid, replica_id):
        return
    await processes.signal_group(pid, "TERM")
    if await wait_gone(processes, pid, replica_id, timeout_s):
        return
    log.warning("replica %s ignored SIGTERM for %gs; killing it", replica_id, timeout_s)
    await processes.signal_group(pid, "KILL")
    if not await wait_gone(processes, pid, replica_id, _KILL_WAIT_S):
        raise ExecutorError(f"replica {replica_id} (pid {pid}) survived SIGKILL")
