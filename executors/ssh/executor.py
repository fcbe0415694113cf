"""The ssh executor: replicas are worker processes on hosts from an inventory.

Each replica is the worker process of `executors.worker_process`, started
over SSH in a session of its own so that it outlives the connection and the
control plane. All a restarted control plane needs to find it again lives on
its host, under the host's workdir (the worker's files, shipped over SFTP,
as that module lays them out), and `envs/<key>/` holds a runtime_env.pip
virtualenv, shared by replicas with the same requirements.
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from capstan.errors import NotFound
from executors import worker_process
from executors.base import (
    Capabilities,
    Executor,
    ExecutorError,
    LaunchSpec,
    Node,
    ReplicaRef,
)
from executors.log_file import read_log
from executors.runtime_env.environment import Environment
from executors.ssh import working_dir
from executors.ssh.command import start_script, worker_env
from executors.ssh.environments import HostEnvironments
from executors.ssh.link import HostLink
from executors.ssh.remote import Remote
from executors.ssh.settings import HostSettings, SshSettings
from executors.worker_process import Ready, WorkerFiles

log = logging.getLogger("capstan.executors.ssh")
_CLEANUP_PERIOD_S = 3600.0

_WILDCARDS = ("0.0.0.0", "::", "")


class SshExecutor(Executor):
    """Runs replicas as processes on SSH hosts."""

    name = "ssh"
    capabilities = Capabilities(
        schedules_itself=False,
        adopts_replicas=True,
        supports_working_dir=True,
        supports_pip=True,
        supports_conda=True,
        reads_logs=True,
    )

    def __init__(self, config: Mapping[str, Any], state_dir: pathlib.Path) -> None:
        super().__init__(config, state_dir)
        self.settings = SshSettings.from_config(config)
        self._links = {host.name: HostLink(host, self.settings) for host in self.settings.hosts}
        self._environments = HostEnvironments(self.settings.build_timeout_s)
        # When each host's unused working_dir archives are next removed.
        self._next_cleanup_mono_s: dict[str, float] = {}

    async def capacity(self) -> Sequence[Node]:
        async with asyncio.TaskGroup() as group:
            alive = [group.create_task(self._is_reachable(link)) for link in self._links.values()]
        return [
            Node(host.name, host.num_cpus, host.gpu_ids, dict(host.resources), task.result())
            for host, task in zip(self.settings.hosts, alive, strict=True)
        ]

    async def prepare(self, spec: LaunchSpec) -> None:
        environment = Environment.of(spec.options)
        if not environment.is_default:
            link = await self._place(spec.node)
            await self._environments.interpreter(link, environment)

    async def launch(self, spec: LaunchSpec) -> ReplicaRef:
        replica_id = spec.replica_id
        link = await self._place(spec.node)
        env = worker_env(spec, link.host)
        # Built by prepare; this only looks it up (or builds it, if prepare
        # was skipped or placed the replica elsewhere).
        python = await self._environments.interpreter(link, Environment.of(spec.options))
        remote = await link.remote()
        files = remote.files(replica_id)
        pid = None
        try:
            pid = await _start(remote, link.host, python, spec, files, env)
            ready = await self._wait_ready(remote, replica_id, pid)
        except BaseException:
            await self._abandon(remote, files, replica_id, pid)
            raise
        return self._ref(link.host, files, ready)

    async def stop(self, ref: ReplicaRef, timeout_s: float) -> None:
        link = self._link(ref.data.get("host") or ref.node)
        remote = await link.remote()
        files = remote.files(ref.replica_id)
        pid = ref.data.get("pid")
        if pid is None and (ready := await _read_ready(remote, files.ready)) is not None:
            pid = ready.pid
        if pid is not None:
            await worker_process.terminate(remote, int(pid), ref.replica_id, timeout_s)
        # The log stays: it is how a user finds out why a replica died.
        await remote.remove(files.config, files.ready)
        await remote.remove_tree(files.working_dir)

    async def observe(self) -> Sequence[ReplicaRef]:
        async with asyncio.TaskGroup() as group:
            found = [group.create_task(self._observe_host(link)) for link in self._links.values()]
        return [ref for task in found for ref in task.result()]

    async def read_log(self, ref: ReplicaRef, since_s: float, follow: bool) -> AsyncIterator[str]:
        # SFTP reads from an offset, as `tail -f` would, over the host's
        # one connection. A ref rebuilt for a stopped replica names no host:
        # the log is looked for on each.
        links = [self._link(ref.node)] if ref.node else list(self._links.values())
        for link in links:
            remote = await link.remote()
            path = ref.data.get("log") or remote.files(ref.replica_id).log
            if await remote.read(path, 0) is None:
                continue

            async def read(
                offset: int, remote: Remote = remote, path: str = path
            ) -> tuple[bytes, int]:
                return await remote.read(path, -1, offset) or b"", offset

            async for line in read_log(read, time.time() - since_s if since_s > 0 else None,
                                       follow):  # fmt: skip
                yield line
            return
        raise NotFound(f"replica {ref.replica_id} has no log on any ssh host")

    async def close(self) -> None:
        async with asyncio.TaskGroup() as group:
            for link in self._links.values():
                group.create_task(link.close())

    async def _is_reachable(self, link: HostLink) -> bool:
        try:
            await (await link.remote()).probe()
        except ExecutorError:
            return False
        return True

    async def _place(self, node: str) -> HostLink:
        """The host the scheduler chose, or the first reachable one."""
        if node:
            return self._link(node)
        for link in self._links.values():
            if await self._is_reachable(link):
                return link
        raise ExecutorError("no ssh host is reachable")

    def _link(self, node: str) -> HostLink:
        try:
            return self._links[node]
        except KeyError:
            hosts = ", ".join(self._links)
            message = f"node {node!r} is not a host of the ssh executor (hosts: {hosts})"
            raise ExecutorError(message, retryable=False) from None

    async def _wait_ready(self, remote: Remote, replica_id: str, pid: int) -> Ready:
        files = remote.files(replica_id)

        async def read() -> bytes | None:
            return await remote.read(files.ready)

        async def is_running() -> bool:
            return await remote.is_running(pid)

        async def log_tail() -> str:
            return await _log_tail(remote, files)

        timeout_s = self.settings.start_timeout_s
        where = f"replica {replica_id} on host {remote.name}"
        return await worker_process.wait_ready(read, is_running, timeout_s, where, log_tail)

    async def _abandon(
        self, remote: Remote, files: WorkerFiles, replica_id: str, pid: int | None
    ) -> None:
        """After a failed launch: nothing may be left running. Best effort,
        since the failure may be the host itself."""
        try:
            if pid is not None:
                # Unconditionally: the worker may not have exec'd yet, and
                # its pid cannot have been reused while we were starting it.
                await remote.signal_group(pid, "KILL")
            await remote.remove(files.config, files.ready)
            await remote.remove_tree(files.working_dir)
        except ExecutorError as error:
            log.warning("could not clean up replica %s: %s", replica_id, error)

    async def _observe_host(self, link: HostLink) -> list[ReplicaRef]:
        """The host's live replicas; none when it cannot be reached, so the
        control plane counts them dead and replaces them elsewhere."""
        try:
            return await self._live_refs(link)
        except* ExecutorError as errors:
            log.warning("host %s omitted from observe: %s", link.host.name, errors.exceptions[0])
        return []

    async def _live_refs(self, link: HostLink) -> list[ReplicaRef]:
        remote = await link.remote()
        if time.monotonic() >= self._next_cleanup_mono_s.get(link.host.name, 0.0):
            self._next_cleanup_mono_s[link.host.name] = time.monotonic() + _CLEANUP_PERIOD_S
            await working_dir.collect(remote)
        paths = await remote.ready_files()
        async with asyncio.TaskGroup() as group:
            checks = [group.create_task(_live_ready(remote, path)) for path in paths]
        found = [ready for task in checks if (ready := task.result()) is not None]
        return [self._ref(link.host, remote.files(r.replica_id), r) for r in found]

    def _ref(self, host: HostSettings, files: WorkerFiles, ready: Ready) -> ReplicaRef:
        return ReplicaRef(
            replica_id=ready.replica_id,
            executor=self.name,
            address=_reachable(ready.address, host),
            node=host.name,
            nonce=ready.nonce,
            data={"pid": str(ready.pid), "host": host.name, "log": files.log},
            tls=ready.tls,
        )


async def _start(
    remote: Remote,
    host: HostSettings,
    python: str,
    spec: LaunchSpec,
    files: WorkerFiles,
    env: dict[str, str],
) -> int:
    """Ships the config (and working_dir), starts the worker; its pid. The
    worker listens off this machine, so it serves TLS with a certificate
    for the address callers dial."""
    await remote.remove(files.ready)
    config = spec.config_with_tls(sorted({host.address, host.bind_host} - set(_WILDCARDS)))
    await remote.write(files.config, config.SerializeToString())
    cwd = await _prepare_working_dir(remote, spec, files, env, host.python)
    output = await remote.run(start_script(python, cwd, files, host.bind_host, env))
    return int(output.split()[-1])


async def _prepare_working_dir(
    remote: Remote, spec: LaunchSpec, files: WorkerFiles, env: dict[str, str], python: str
) -> str:
    """The folder the worker starts in (first on PYTHONPATH too): its own
    copy of the runtime_env's working_dir, the host's one copy of an
    uploaded package, else the host's workdir."""
    folder = spec.options.working_dir
    if spec.options.is_package:
        cwd = await working_dir.ship_package(remote, spec.package_archive(), python)
    elif folder:
        await working_dir.ship(remote, folder, files.working_dir, python)
        cwd = files.working_dir
    else:
        return remote.workdir
    env["PYTHONPATH"] = ":".join(filter(None, [cwd, env.get("PYTHONPATH")]))
    return cwd


async def _read_ready(remote: Remote, path: str) -> Ready | None:
    """The ready file at `path`, if a serving worker wrote it."""
    data = await remote.read(path)
    try:
        return None if data is None else Ready.parse(data)
    except (ValueError, ExecutorError):
        return None  # a failed start, or a file that is not ours


async def _live_ready(remote: Remote, path: str) -> Ready | None:
    """A ready file if its worker is still running; else None."""
    ready = await _read_ready(remote, path)
    if ready is None or not await remote.is_worker(ready.pid, ready.replica_id):
        return None
    return ready


async def _log_tail(remote: Remote, files: WorkerFiles) -> str:
    return f"its log ({remote.name}:{files.log}) ends with:\n{await remote.tail(files.log)}"


def _reachable(address: str, host: HostSettings) -> str:
    """The worker reports the interface it bound; a wildcard one is reached
    through the host's address."""
    bound, _, port = address.rpartition(":")
    if bound.strip("[]") not in _WILDCARDS:
        return address
    return f"[{host.address}]:{port}" if ":" in host.address else f"{host.address}:{port}"
