"""The one SSH connection per host: opened on first use, reused by every
call, and reopened after it drops, no more often than a capped backoff
allows, so that a host that is down costs each reconcile pass nothing."""

from __future__ import annotations

import asyncio
import logging
import posixpath
import time

import asyncssh

from executors.base import ExecutorError
from executors.ssh.remote import Remote
from executors.ssh.settings import HostSettings, SshSettings

log = logging.getLogger("capstan.executors.ssh")

_FIRST_BACKOFF_S = 0.25
# A dead peer that never closes the TCP connection is noticed after
# interval * count seconds.
_KEEPALIVE_INTERVAL_S = 10.0
_KEEPALIVE_COUNT_MAX = 3


class HostLink:
    """Hands out the live `Remote` for one host, connecting when needed."""

    def __init__(self, host: HostSettings, settings: SshSettings) -> None:
        self.host = host
        self._settings = settings
        self._remote: Remote | None = None
        self._lock = asyncio.Lock()
        self._failures = 0
        self._retry_at = 0.0
        self._last_error = ""

    async def remote(self) -> Remote:
        """The open connection; raises `ExecutorError` (retryable) when the
        host cannot be reached now or was unreachable moments ago."""
        if self._remote is not None and not self._remote.is_closed:
            return self._remote
        async with self._lock:
            if self._remote is not None and not self._remote.is_closed:
                return self._remote
            self._remote = None
            wait_s = self._retry_at - time.monotonic()
            if wait_s > 0:
                message = f"host {self.host.name} is unreachable ({self._last_error})"
                raise ExecutorError(f"{message}; next attempt in {wait_s:.1f}s")
            self._remote = await self._connect_or_back_off()
            return self._remote

    async def close(self) -> None:
        """Closes the connection; the next `remote()` opens a new one."""
        async with self._lock:
            remote, self._remote = self._remote, None
        if remote is not None:
            remote.close()
            await remote.wait_closed()

    async def _connect_or_back_off(self) -> Remote:
        try:
            remote = await self._connect()
        except ExecutorError as error:
            self._failures += 1
            backoff_s = _FIRST_BACKOFF_S * 2 ** (self._failures - 1)
            self._retry_at = time.monotonic() + min(
                backoff_s, self._settings.reconnect_max_backoff_s
            )
            self._last_error = str(error)
            raise
        if self._failures:
            log.info("host %s is reachable again", self.host.name)
        self._failures = 0
        return remote

    async def _connect(self) -> Remote:
        host = self.host
        where = f"{host.user}@{host.address}:{host.port}"
        connection = None
        try:
            async with asyncio.timeout(self._settings.connect_timeout_s):
                connection = await asyncssh.connect(**self._options())
                sftp = await connection.start_sftp_client()
                workdir = await _prepare_workdir(sftp, host.workdir)
        except (OSError, TimeoutError, asyncssh.Error) as error:
            if connection is not None:
                connection.close()
            reason = str(error) or type(error).__name__
            message = f"cannot reach host {host.name} ({where}): {reason}"
            raise ExecutorError(message) from error
        log.info("connected to host %s (%s), workdir %s", host.name, where, workdir)
        return Remote(host.name, connection, sftp, workdir)

    def _options(self) -> dict[str, object]:
        host, settings = self.host, self._settings
        options: dict[str, object] = {
            "host": host.address,
            "port": host.port,
            "username": host.user,
            # None disables checking: allowed only when the user said so.
            "known_hosts": settings.known_hosts if settings.verify_host_keys else None,
            "keepalive_interval": _KEEPALIVE_INTERVAL_S,
            "keepalive_count_max": _KEEPALIVE_COUNT_MAX,
        }
        if host.key_file:
            options["client_keys"] = [host.key_file]
        return options


async def _prepare_workdir(sftp: asyncssh.SFTPClient, workdir: str) -> str:
    """Makes `workdir` absolute (SFTP does not expand "~") and creates it."""
    if workdir == "~" or workdir.startswith("~/"):
        workdir = workdir[2:]
    if not posixpath.isabs(workdir):
        workdir = posixpath.join(await sftp.realpath("."), workdir)
    workdir = posixpath.normpath(workdir)
    for folder in ("replicas", "logs", "archives", "working_dirs"):
        await sftp.makedirs(posixpath.join(workdir, folder), exist_ok=True)
    return workdir
