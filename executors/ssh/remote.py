"""One open SSH connection to a host and the few things the executor does
through it: files over SFTP, short shell commands, and questions about
processes answered from the host's /proc.

Every failure becomes an `ExecutorError`; one that means the connection is
gone also closes it, so that the host's `HostLink` opens a new one next time.
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import shlex
from collections.abc import AsyncIterator

import asyncssh

from executors.base import ExecutorError
from executors.worker_process import WorkerFiles, is_command_of

# Every remote operation is short; one that takes longer is on a dead link.
_OPERATION_TIMEOUT_S = 30.0
# OpenSSH allows 10 sessions per connection (MaxSessions); SFTP holds one.
_MAX_COMMANDS = 8
_TAIL_BYTES = 4000
_CMDLINE_BYTES = 65536
_STAT_BYTES = 4096
_LINK_ERRORS = (
    asyncssh.SFTPConnectionLost,
    asyncssh.SFTPNoConnection,
    asyncssh.DisconnectError,
    asyncssh.ChannelOpenError,
    OSError,
    TimeoutError,
)


class Remote:
    """A live connection to one host, with Capstan's workdir resolved."""

    def __init__(
        self,
        name: str,
        connection: asyncssh.SSHClientConnection,
        sftp: asyncssh.SFTPClient,
        workdir: str,
    ) -> None:
        self.name = name
        self.workdir = workdir
        self.replicas_dir = posixpath.join(workdir, "replicas")
        self._connection = connection
        self._sftp = sftp
        self._commands = asyncio.Semaphore(_MAX_COMMANDS)
        self._is_closing = False

    @property
    def is_closed(self) -> bool:
        return self._is_closing or self._connection.is_closed()

    def files(self, replica_id: str) -> WorkerFiles:
        return WorkerFiles.under(self.workdir, replica_id)

    async def run(self, script: str) -> str:
        """Runs `script` with sh (whatever the user's login shell is) and
        returns its stdout; a non-zero exit is an `ExecutorError`."""
        async with self._commands, self._guard("running a command"):
            result = await self._connection.run(f"sh -c {shlex.quote(script)}", check=False)
        if result.exit_status != 0:
            detail = str(result.stderr or result.stdout or "").strip()[-_TAIL_BYTES:]
            message = f"host {self.name}: command failed with {result.exit_status}: {detail}"
            raise ExecutorError(message)
        return str(result.stdout or "")

    async def execute(self, script: str) -> tuple[int | None, str, str]:
        """Runs a long `script` (an environment build) with sh, with no
        deadline of its own, and returns its exit status, stdout and stderr
        whatever the status: the caller judges them. Cancelling it (as a
        caller's timeout does) closes the channel and keeps the connection."""
        async with self._commands, self._guard("running a long command", None):
            process = await self._connection.create_process(f"sh -c {shlex.quote(script)}")
            try:
                result = await process.wait(check=False)
            finally:
                process.close()
        return result.exit_status, str(result.stdout or ""), str(result.stderr or "")

    async def read(self, path: str, size: int = -1, offset: int = 0) -> bytes | None:
        """The file's bytes (up to `size`), or None when it does not exist."""
        async with self._guard(f"reading {path}"):
            try:
                async with self._sftp.open(path, "rb", encoding=None) as file:
                    return await file.read(size, offset)
            except (asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath):
                return None

    async def write(self, path: str, data: bytes) -> None:
        """Writes a file only this user can read: configs carry user code."""
        attrs = asyncssh.SFTPAttrs(permissions=0o600)
        async with (
            self._guard(f"writing {path}"),
            self._sftp.open(path, "wb", attrs, encoding=None) as file,
        ):
            await file.write(data)

    async def remove(self, *paths: str) -> None:
        """Removes files; ones already gone are fine."""
        async with self._guard("removing files"):
            for path in paths:
                with contextlib.suppress(asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath):
                    await self._sftp.remove(path)

    async def remove_tree(self, path: str) -> None:
        """Removes a folder and everything in it; one already gone is fine."""
        async with self._guard(f"removing {path}"):
            if await self._sftp.isdir(path):
                await self._sftp.rmtree(path)

    async def ready_files(self) -> list[str]:
        """Paths of every replica ready file on this host."""
        async with self._guard(f"listing {self.replicas_dir}"):
            names = await self._sftp.listdir(self.replicas_dir)
        return [
            posixpath.join(self.replicas_dir, name)
            for name in sorted(names)
            if name.endswith(".json") and not name.startswith(".")
        ]

    async def is_worker(self, pid: int, replica_id: str) -> bool:
        """Whether `pid` is alive and is the worker of `replica_id`, from the
        host's /proc (psutil cannot look at another machine)."""
        try:
            cmdline = await self.read(f"/proc/{int(pid)}/cmdline", _CMDLINE_BYTES)
        except ExecutorError:
            if self.is_closed:
                raise
            return False  # not ours to read: another user's process
        arguments = (cmdline or b"").decode(errors="replace").split("\0")
        return is_command_of(arguments, replica_id)

    async def is_running(self, pid: int) -> bool:
        """Whether `pid` is alive and not a zombie. For a worker being
        started, whose command line is the shell's until it execs, and reads
        empty while an exec is under way."""
        try:
            stat = await self.read(f"/proc/{int(pid)}/stat", _STAT_BYTES)
        except ExecutorError:
            if self.is_closed:
                raise
            return False
        # The state follows the command name, which may itself hold ") ".
        fields = (stat or b"").rpartition(b")")[2].split()
        return bool(fields) and fields[0] not in (b"Z", b"X")

    async def signal_group(self, pid: int, signal_name: str) -> None:
        """Signals the worker's process group (setsid made pid == pgid), and
        the pid itself in case it does not lead one; gone is fine."""
        pid = int(pid)
        # `-s NAME --` is the form dash's kill accepts for a negative pid too.
        await self.run(f"kill -s {signal_name} -- -{pid} {pid} 2>/dev/null; true")

    async def probe(self) -> None:
        """One round trip: a connection can look open for a moment after its
        host went away, until the loop handles the TCP close."""
        async with self._guard("checking the connection"):
            await self._sftp.stat(self.workdir)

    async def tail(self, path: str) -> str:
        """The end of a log file, for error messages; never raises."""
        try:
            async with self._guard(f"reading {path}"):
                size = (await self._sftp.stat(path)).size or 0
            data = await self.read(path, _TAIL_BYTES, max(0, size - _TAIL_BYTES))
        except ExecutorError as error:
            return f"(the log cannot be read: {error})"
        return (data or b"").decode(errors="replace").strip()

    def close(self) -> None:
        self._is_closing = True
        self._connection.close()

    async def wait_closed(self) -> None:
        await self._connection.wait_closed()

    @contextlib.asynccontextmanager
    async def _guard(
        self, what: str, timeout_s: float | None = _OPERATION_TIMEOUT_S
    ) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(timeout_s):
                yield
        except _LINK_ERRORS as error:
            # The link is broken: drop it, so the next call reconnects.
            self.close()
            raise ExecutorError(f"host {self.name}: lost the connection {what}: {error}") from error
        except asyncssh.Error as error:
            raise ExecutorError(f"host {self.name}: failed {what}: {error}") from error
