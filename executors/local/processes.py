"""Worker processes on this machine, inspected with psutil: which of them
still are a replica's worker (see `executors.worker_process`), signalling
them, and reading what they left behind."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import shutil
import signal

import psutil

from executors.worker_process import is_command_of

_TAIL_BYTES = 4000


class LocalProcesses:
    """`executors.worker_process.Processes` for this machine."""

    async def is_worker(self, pid: int, replica_id: str) -> bool:
        return is_worker(pid, replica_id)

    async def signal_group(self, pid: int, signal_name: str) -> None:
        signal_group(pid, signal.Signals[f"SIG{signal_name}"])


def is_worker(pid: int, replica_id: str) -> bool:
    """Whether `pid` is alive, not a zombie, and the worker of `replica_id`."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return is_command_of(process.cmdline(), replica_id)
    except psutil.Error:  # gone, or another user's
        return False


def commands(pids: list[int]) -> list[str]:
    """The program each live process of `pids` was started as (argv[0])."""
    found = []
    for pid in pids:
        try:
            found.append(psutil.Process(pid).cmdline()[0])
        except (psutil.Error, IndexError):  # gone meanwhile
            continue
    return found


def signal_group(pid: int, signum: int) -> None:
    """Sends `signum` to the worker's process group (it leads its own
    session), never to ours."""
    try:
        group = os.getpgid(pid)
    except ProcessLookupError:
        return
    if group == os.getpgrp():
        os.kill(pid, signum)
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signum)


def read_text(path: pathlib.Path) -> str | None:
    """The file's text, or None if it is not there (yet)."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def tail(path: pathlib.Path) -> str:
    """The end of a log file, for error messages."""
    try:
        with path.open("rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - _TAIL_BYTES))
            return log.read().decode(errors="replace").strip()
    except OSError:
        return ""


async def detect_gpus() -> tuple[str, ...]:
    """GPU indices from nvidia-smi; none when it is absent or fails."""
    if shutil.which("nvidia-smi") is None:
        return ()
    try:
        process = await asyncio.create_subprocess_exec(
            "nvidia-smi",
            "--query-gpu=index",
            "--format=csv,noheader",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return ()
    try:
        async with asyncio.timeout(10):
            output, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        return ()
    if process.returncode != 0:
        return ()
    return tuple(line.strip() for line in output.decode().splitlines() if line.strip())
