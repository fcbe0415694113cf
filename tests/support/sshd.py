"""Real OpenSSH servers on loopback, as the ssh executor's "hosts".

Two `sshd -D` processes, one listening on 127.0.0.1 and one on 127.0.0.2
(all of 127.0.0.0/8 is loopback on Linux), each with its own host key, both
trusting one client key the fixture generates. A known_hosts file built from
the host keys lets the executor check them, as it would in production.

Use the session-scoped `ssh_hosts` fixture (load this module as a pytest
plugin: `pytest_plugins = ["tests.support.sshd"]`), and `open_ssh_executor(hosts,
state_dir)` for a ready `SshExecutor` whose hosts keep their files under
`state_dir`; leaving it fails the test if a worker it started still runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import os
import pathlib
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from executors.ssh import SshExecutor
from tests.support.ports import free_ports
from tests.support.waiting import eventually_sync

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
SSHD = "/usr/sbin/sshd"


@dataclasses.dataclass
class SshHost:
    """One sshd. `stop` takes the whole host off the network (the listener
    and every session it forked); `start` brings it back on the same port."""

    name: str
    address: str
    port: int
    root: pathlib.Path
    authorized_keys: pathlib.Path
    process: subprocess.Popen | None = None

    @property
    def host_key(self) -> pathlib.Path:
        return self.root / "host_ed25519"

    def start(self) -> None:
        config = self.root / "sshd_config"
        config.write_text(self._config())
        with (self.root / "sshd.log").open("ab") as log:
            self.process = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        eventually_sync(
            self._answers, f"sshd {self.name} on {self.address}:{self.port}", timeout_s=15
        )

    def stop(self, signum: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        pids = [self.process.pid, *_descendants(self.process.pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        self.process.wait(timeout=15)
        self.process = None
        eventually_sync(
            lambda: not _alive(pids), f"sshd {self.name} and its sessions to exit", timeout_s=15
        )

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            log = (self.root / "sshd.log").read_text(errors="replace")
            raise RuntimeError(f"sshd {self.name} exited early:\n{log}")
        try:
            with socket.create_connection((self.address, self.port), timeout=1) as sock:
                return sock.recv(8).startswith(b"SSH-")
        except OSError:
            return False

    def _config(self) -> str:
        return "\n".join(
            [
                f"ListenAddress {self.address}:{self.port}",
                f"HostKey {self.host_key}",
                f"PidFile {self.root / 'sshd.pid'}",
                f"AuthorizedKeysFile {self.authorized_keys}",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "StrictModes no",
                "UsePAM no",
                "Subsystem sftp internal-sftp",
                "LogLevel INFO",
                "",
            ]
        )


@dataclasses.dataclass(frozen=True)
class SshHosts:
    """The running hosts and the client's credentials for them."""

    hosts: tuple[SshHost, ...]
    client_key: pathlib.Path
    known_hosts: pathlib.Path

    def executor_config(self, state_dir: pathlib.Path, **overrides: Any) -> dict[str, Any]:
        """An ssh executor config whose hosts keep their files under
        `state_dir` (one workdir per host: they share this filesystem)."""
        return {
            "hosts": [self.host_config(host, state_dir) for host in self.hosts],
            "known_hosts": str(self.known_hosts),
            "connect_timeout_s": 5,
            "start_timeout_s": 60,
            # Tests take hosts down and bring them back: retry soon.
            "reconnect_max_backoff_s": 0.5,
            **overrides,
        }

    def executor(self, state_dir: pathlib.Path, **overrides: Any) -> SshExecutor:
        """A new `SshExecutor` on these hosts: the shape of the contract
        suite's executor factories (`lambda state_dir: hosts.executor(state_dir)`)."""
        return SshExecutor(self.executor_config(state_dir, **overrides), state_dir)

    def host_config(self, host: SshHost, state_dir: pathlib.Path) -> dict[str, Any]:
        return {
            "name": host.name,
            "address": host.address,
            "port": host.port,
            "user": getpass.getuser(),
            "key_file": str(self.client_key),
            "python": sys.executable,
            "num_cpus": 4,
            "resources": {f"host_{host.name}": 1},
            "workdir": str(state_dir / "hosts" / host.name),
            # The test apps import as `tests.apps...` from the repository root.
            "env": {"PYTHONPATH": str(REPO_ROOT)},
        }


def start_hosts(root: pathlib.Path) -> SshHosts:
    """Generates keys and starts host "a" on 127.0.0.1 and "b" on 127.0.0.2."""
    pathlib.Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privsep dir
    client_key = root / "client_ed25519"
    _keygen(client_key)
    authorized_keys = root / "authorized_keys"
    authorized_keys.write_text(client_key.with_suffix(".pub").read_text())
    hosts = []
    for name, address in (("a", "127.0.0.1"), ("b", "127.0.0.2")):
        (root / name).mkdir()
        host = SshHost(name, address, free_ports(1, address)[0], root / name, authorized_keys)
        _keygen(host.host_key)
        hosts.append(host)
    known_hosts = root / "known_hosts"
    known_hosts.write_text("".join(_known_host(host) for host in hosts))
    ssh_hosts = SshHosts(tuple(hosts), client_key, known_hosts)
    try:
        for host in hosts:
            host.start()
    except BaseException:
        stop_hosts(ssh_hosts)
        raise
    return ssh_hosts


def stop_hosts(ssh_hosts: SshHosts) -> None:
    for host in ssh_hosts.hosts:
        host.stop()


@pytest.fixture(scope="session")
def ssh_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshHosts]:
    """Two running sshd hosts, "a" and "b", for the whole session."""
    hosts = start_hosts(tmp_path_factory.mktemp("sshd"))
    yield hosts
    stop_hosts(hosts)


@contextlib.asynccontextmanager
async def open_ssh_executor(
    hosts: SshHosts, state_dir: pathlib.Path, **overrides: Any
) -> AsyncIterator[SshExecutor]:
    """A ready `SshExecutor` on `hosts`. On exit it is closed, and any worker
    still running under `state_dir` is killed and fails the test."""
    executor = hosts.executor(state_dir, **overrides)
    try:
        yield executor
    finally:
        await executor.close()
        if leftovers := worker_pids(state_dir):
            for pid in leftovers:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            raise AssertionError(f"replica workers left running: {leftovers}")


def worker_pids(state_dir: pathlib.Path) -> list[int]:
    """Live (not zombie) processes whose command line names `state_dir`."""
    marker = str(state_dir).encode()
    pids = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline and _state(int(entry.name)) not in ("Z", None):
            pids.append(int(entry.name))
    return pids


def _keygen(path: pathlib.Path) -> None:
    command = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)]
    subprocess.run(command, check=True, capture_output=True)


def _known_host(host: SshHost) -> str:
    key_type, key = host.host_key.with_suffix(".pub").read_text().split()[:2]
    return f"[{host.address}]:{host.port} {key_type} {key}\n"


def _state(pid: int) -> str | None:
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _parent(pid: int) -> int | None:
    try:
        return int(pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit() and (parent := _parent(int(entry.name))) is not None:
            children.setdefault(parent, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _alive(pids: list[int]) -> bool:
    return any(_state(pid) not in ("Z", None) for pid in pids)
