"""Worker processes on this machine: finding them again, stopping them, and
reading what they left behind.

A pid alone is not an identity (pids are reused), so a process counts as a
replica's worker only while its command line still names that replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import shutil
import signal
from typing import Any

_POLL_S = 0.02
_TAIL_BYTES = 4000


def config_name(replica_id: str) -> str:
    """The file name of a replica's config; the worker's command line names
    it, which is how the worker is recognised."""
    return f"{replica_id}.config.pb"


def is_worker(pid: int, replica_id: str) -> bool:
    """Whether `pid` is alive and is the worker of `replica_id`. Zombies
    (exited, not yet reaped) have an empty command line, so they are not."""
    try:
        cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    suffix = (os.sep + config_name(replica_id)).encode()
    return any(arg.endswith(suffix) for arg in cmdline.split(b"\0"))


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


async def wait_gone(pid: int, replica_id: str, timeout_s: float) -> bool:
    """Waits up to `timeout_s` for the worker to exit; whether it did. It
    may not be our child, so there is nothing to wait on but its pid."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while is_worker(pid, replica_id):
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(_POLL_S)
    return True


async def terminate(pid: int, replica_id: str, timeout_s: float) -> None:
    """SIGTERM to the worker's group, then SIGKILL after `timeout_s`."""
    if not is_worker(pid, replica_id):
        return
    signal_group(pid, signal.SIGTERM)
    if await wait_gone(pid, replica_id, timeout_s):
        return
    signal_group(pid, signal.SIGKILL)
    await wait_gone(pid, replica_id, 5.0)


def read_json(path: pathlib.Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None if the file is not there (yet)."""
    try:
        return json.loads(path.read_text())
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
