"""One `capstan start` per state dir.

An advisory lock (flock) on a file in the state dir, held for the life of the
process: the kernel drops it when the holder exits, however it exits, so a
crashed instance never leaves a stale lock behind, and a second instance is
refused before it touches anything of the first (its proxy, its replicas, its
database).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib

import grpc

from capstan.errors import CapstanError


class AlreadyRunning(CapstanError):
    """Another `capstan start` already uses this state dir or these ports."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class InstanceLock(contextlib.AbstractContextManager):
    """`with InstanceLock(state_dir):` holds the state dir for this process,
    or raises `AlreadyRunning` naming the holder's pid."""

    def __init__(self, state_dir: pathlib.Path) -> None:
        self.path = state_dir / "capstan.lock"
        self._fd: int | None = None

    def __enter__(self) -> InstanceLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise AlreadyRunning(
                f"another capstan start (pid {holder}) runs with state dir "
                f"{self.path.parent}: stop it (capstan shutdown) or use another --state-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock; the file may stay
            self._fd = None
