"""Keeps the HTTP/gRPC proxy of a `capstan start` running.

The proxy runs in a session of its own so that it (and HTTP traffic) outlives
a crash of the control plane; a restarted control plane adopts it through the
pid record in the state dir instead of starting a second one. While the
control plane runs, a proxy that dies is started again at once, and one that
keeps dying waits longer each time (the replicas' backoff, with a shorter
base), so a proxy that cannot start does not spin.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import json
import logging
import os
import pathlib
import signal
import time
from typing import BinaryIO

import psutil

from capstan.v1 import controlplane_pb2 as cp
from controlplane.reconciler.backoff import Backoff, BackoffPolicy, after_failure

log = logging.getLogger("capstan.proxy")

# The first restart comes within 0.1 s; one that keeps dying waits up to 30 s.
RESTART_POLICY = BackoffPolicy(base_s=0.1, max_s=30.0, reset_s=60.0)


# A proxy this control plane started (asyncio reaps it and knows its exit
# code), or one it adopted from a crashed predecessor (psutil watches it).
_Proxy = asyncio.subprocess.Process | psutil.Process


class ProxyState(enum.Enum):
    RUNNING = cp.PROXY_STATE_RUNNING
    BACKING_OFF = cp.PROXY_STATE_BACKING_OFF
    STOPPED = cp.PROXY_STATE_STOPPED


@dataclasses.dataclass(frozen=True)
class ProxyLaunch:
    """How to run the proxy: its command, the pid record a restarted control
    plane adopts it by, and the log its output goes to."""

    argv: tuple[str, ...]
    record: pathlib.Path
    log: pathlib.Path


@dataclasses.dataclass(frozen=True)
class ProxyStatus:
    state: ProxyState
    pid: int = 0
    restarts: int = 0
    message: str = ""

    def to_proto(self) -> cp.ProxyStatus:
        return cp.ProxyStatus(
            state=self.state.value, pid=self.pid, restarts=self.restarts, message=self.message
        )


class ProxySupervisor:
    """`await run()` adopts or starts the proxy and restarts it whenever it
    exits; `await stop()` ends that and stops the proxy. `status()` is what
    `capstan status` shows."""

    def __init__(self, launch: ProxyLaunch, policy: BackoffPolicy = RESTART_POLICY) -> None:
        self._launch = launch
        self._policy = policy
        self._process: _Proxy | None = None
        self._backoff: Backoff | None = None
        self._restarts = 0
        self._is_stopped = False

    def status(self) -> ProxyStatus:
        if self._is_stopped:
            return ProxyStatus(ProxyState.STOPPED, restarts=self._restarts)
        if self._backoff is not None and self._backoff.is_waiting(time.monotonic()):
            return ProxyStatus(
                ProxyState.BACKING_OFF, restarts=self._restarts, message=self._backoff.reason
            )
        pid = self._process.pid if self._process is not None else 0
        return ProxyStatus(ProxyState.RUNNING, pid, self._restarts)

    async def run(self) -> None:
        """Never returns by itself; cancel it (or call stop)."""
        self._process = adoptable_proxy(self._launch.record)
        if self._process is not None:
            log.info("adopted the running proxy (pid %d)", self._process.pid)
        while True:
            try:
                if self._process is None:
                    self._process = await self._start()
                how = await _exited(self._process)
            except OSError as error:
                how = f"could not be started ({error})"
            self._process = None
            now = time.monotonic()
            backoff = after_failure(self._backoff, now, "", self._policy)
            self._backoff = dataclasses.replace(backoff, reason=self._why(how, backoff.failures))
            delay = backoff.retry_mono_s - now
            log.error("%s; starting it again in %.1f s", self._backoff.reason, delay)
            await asyncio.sleep(delay)
            self._restarts += 1

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stops the proxy (SIGTERM, then SIGKILL past the timeout) and forgets
        its record. Idempotent; the caller cancels `run` first."""
        self._is_stopped = True
        process, self._process = self._process, None
        if process is not None:
            await _terminate(process, timeout_s)
        self._launch.record.unlink(missing_ok=True)

    def _why(self, how: str, failures: int) -> str:
        times = "" if failures == 1 else f" ({failures} times in a row)"
        return f"the proxy {how}{times}; its output is in {self._launch.log}"

    async def _start(self) -> _Proxy:
        with _open_log(self._launch.log) as output:
            child = await asyncio.create_subprocess_exec(
                *self._launch.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # outlives a crash of the control plane
            )
        self._launch.record.write_text(json.dumps({"pid": child.pid}))
        log.info("proxy started (pid %d)", child.pid)
        return child


async def _exited(process: _Proxy) -> str:
    """Waits until the process has exited; says how."""
    if isinstance(process, asyncio.subprocess.Process):
        code = await process.wait()
        if code >= 0:
            return f"exited with code {code}"
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    await _pidfd_exit(process.pid)
    return "exited"


async def _pidfd_exit(pid: int) -> None:
    """Waits for a process that is not our child to exit: its pidfd turns
    readable then (Linux), so no polling is needed."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    exited = loop.create_future()
    loop.add_reader(fd, exited.set_result, None)
    try:
        await exited
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def _open_log(path: pathlib.Path) -> BinaryIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("ab")


def _is_alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def adoptable_proxy(record: pathlib.Path) -> psutil.Process | None:
    """The proxy a crashed control plane left running, if it still runs (a
    pid alone may have been reused by now, so its command line must still
    say `-m proxy`)."""
    with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
        pid = json.loads(record.read_text())["pid"]
        try:
            process = psutil.Process(pid)
            if process.cmdline()[1:3] == ["-m", "proxy"] and _is_alive(process):
                return process
        except psutil.Error:  # gone, or not ours to inspect
            pass
    return None


async def _terminate(process: _Proxy, timeout_s: float) -> None:
    """SIGTERM, then SIGKILL past the timeout; returns once it has exited.
    (Neither kind signals a pid that has since been reused.)"""
    with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
        process.terminate()
        try:
            async with asyncio.timeout(timeout_s):
                await _exited(process)
        except TimeoutError:
            process.kill()
            await _exited(process)
