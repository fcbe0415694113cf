"""The ssh executor: replicas are worker processes on hosts from an inventory.

Each replica is `python -m executors.replica`, started over SSH in a session
of its own so that it outlives the connection and the control plane. All a
restarted control plane needs to find it again lives on its host, under the
host's workdir:

    replicas/<replica_id>.config.pb   the ReplicaConfig, shipped over SFTP
    replicas/<replica_id>.json        the worker's ready file: address, pid, nonce
    logs/<replica_id>.log             the worker's stdout and stderr
    envs/<key>/                       a runtime_env.pip virtualenv, shared by
                                      replicas with the same requirements
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from capstan.v1 import replica_pb2
from executors.base import (
    Capabilities,
    Executor,
    ExecutorError,
    LaunchSpec,
    Node,
    ReplicaRef,
    ReplicaStartError,
)
from executors.runtime_env.environment import Environment
from executors.ssh import working_dir
from executors.ssh.command import start_script, worker_env
from executors.ssh.environments import HostEnvironments
from executors.ssh.link import HostLink
from executors.ssh.remote import Remote, ReplicaFiles
from executors.ssh.settings import HostSettings, SshSettings

log = logging.getLogger("capstan.executors.ssh")

_POLL_S = 0.05
_KILL_WAIT_S = 5.0
_REPLICA_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
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
    )

    def __init__(self, config: Mapping[str, Any], state_dir: pathlib.Path) -> None:
        super().__init__(config, state_dir)
        self.settings = SshSettings.from_config(config)
        self._links = {host.name: HostLink(host, self.settings) for host in self.settings.hosts}
        self._environments = HostEnvironments(self.settings.build_timeout_s)

    async def capacity(self) -> Sequence[Node]:
        async with asyncio.TaskGroup() as group:
            alive = [group.create_task(self._is_reachable(link)) for link in self._links.values()]
        return [
            Node(host.name, host.num_cpus, host.gpu_ids, dict(host.resources), task.result())
            for host, task in zip(self.settings.hosts, alive, strict=True)
        ]

    async def prepare(self, spec: LaunchSpec) -> None:
        environment = Environment.of(spec)
        if not environment.is_default:
            link = await self._place(spec.node)
            await self._environments.interpreter(link, environment)

    async def launch(self, spec: LaunchSpec) -> ReplicaRef:
        replica_id = spec.replica_id
        if not _REPLICA_ID.fullmatch(replica_id):
            message = f"replica_id {replica_id!r} is not a safe file name"
            raise ExecutorError(message, retryable=False)
        link = await self._place(spec.node)
        env = worker_env(spec, link.host)
        # Built by prepare; this only looks it up (or builds it, if prepare
        # was skipped or placed the replica elsewhere).
        python = await self._environments.interpreter(link, Environment.of(spec))
        remote = await link.remote()
        files = remote.files(replica_id)
        pid = None
        try:
            pid = await _start(remote, link.host, python, spec, files, env)
            record = await self._wait_ready(remote, replica_id, pid)
        except BaseException:
            await self._abandon(remote, files, replica_id, pid)
            raise
        return self._ref(link.host, files, record)

    async def stop(self, ref: ReplicaRef, timeout_s: float) -> None:
        link = self._link(ref.data.get("host") or ref.node)
        remote = await link.remote()
        files = remote.files(ref.replica_id)
        pid = ref.data.get("pid") or (await remote.read_json(files.ready) or {}).get("pid")
        if pid is not None:
            await _terminate(remote, int(pid), ref.replica_id, timeout_s)
        # The log stays: it is how a user finds out why a replica died.
        await remote.remove(files.config, files.ready)
        await remote.remove_tree(files.working_dir)

    async def observe(self) -> Sequence[ReplicaRef]:
        async with asyncio.TaskGroup() as group:
            found = [group.create_task(self._observe_host(link)) for link in self._links.values()]
        return [ref for task in found for ref in task.result()]

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

    async def _wait_ready(self, remote: Remote, replica_id: str, pid: int) -> dict[str, Any]:
        files = remote.files(replica_id)
        timeout_s = self.settings.start_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                record = await _poll_ready(remote, replica_id, pid)
        except TimeoutError:
            where = f"replica {replica_id} on host {remote.name}"
            message = f"{where} was not ready within {timeout_s:g}s"
            raise ExecutorError(f"{message}; {await _log_tail(remote, files)}") from None
        if record is None:
            message = f"replica {replica_id} on host {remote.name} exited before it was ready"
            raise ReplicaStartError(f"{message}; {await _log_tail(remote, files)}")
        if "error" in record:
            raise ReplicaStartError(str(record["error"]))
        return record

    async def _abandon(
        self, remote: Remote, files: ReplicaFiles, replica_id: str, pid: int | None
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
        paths = await remote.ready_files()
        async with asyncio.TaskGroup() as group:
            checks = [group.create_task(_live_record(remote, path)) for path in paths]
        records = [record for task in checks if (record := task.result()) is not None]
        return [self._ref(link.host, remote.files(r["replica_id"]), r) for r in records]

    def _ref(
        self, host: HostSettings, files: ReplicaFiles, record: Mapping[str, Any]
    ) -> ReplicaRef:
        return ReplicaRef(
            replica_id=str(record["replica_id"]),
            executor=self.name,
            address=_reachable(str(record["address"]), host),
            node=host.name,
            nonce=str(record.get("nonce", "")),
            data={"pid": str(record["pid"]), "host": host.name, "log": files.log},
        )


async def _start(
    remote: Remote,
    host: HostSettings,
    python: str,
    spec: LaunchSpec,
    files: ReplicaFiles,
    env: dict[str, str],
) -> int:
    """Ships the config (and working_dir), starts the worker; its pid."""
    config = replica_pb2.ReplicaConfig()
    config.CopyFrom(spec.config)
    config.host = host.bind_host
    await remote.remove(files.ready)
    await remote.write(files.config, config.SerializeToString())
    cwd = await _prepare_working_dir(remote, spec, files, env, host.python)
    output = await remote.run(start_script(python, cwd, files, env))
    return int(output.split()[-1])


async def _prepare_working_dir(
    remote: Remote, spec: LaunchSpec, files: ReplicaFiles, env: dict[str, str], python: str
) -> str:
    """The folder the worker starts in: its own copy of the runtime_env's
    working_dir (first on PYTHONPATH too), else the host's workdir."""
    folder = spec.config.deployment.replica_options.runtime_env.working_dir
    if not folder:
        return remote.workdir
    await working_dir.ship(remote, folder, files.working_dir, python)
    env["PYTHONPATH"] = ":".join(filter(None, [files.working_dir, env.get("PYTHONPATH")]))
    return files.working_dir


async def _poll_ready(remote: Remote, replica_id: str, pid: int) -> dict[str, Any] | None:
    """The ready file's record once it appears; None if the worker exits first."""
    ready = remote.files(replica_id).ready
    while (record := await remote.read_json(ready)) is None:
        if not await remote.is_running(pid):
            # It may have written the file just before exiting.
            return await remote.read_json(ready)
        await asyncio.sleep(_POLL_S)
    return record


async def _live_record(remote: Remote, path: str) -> dict[str, Any] | None:
    """A ready file's record if its worker is still running; else None."""
    record = await remote.read_json(path)
    if not record or not {"address", "pid", "replica_id"} <= record.keys():
        return None
    if not isinstance(record["pid"], int) or not isinstance(record["replica_id"], str):
        return None  # not written by our worker
    if not await remote.is_worker(record["pid"], record["replica_id"]):
        return None
    return record


async def _terminate(remote: Remote, pid: int, replica_id: str, timeout_s: float) -> None:
    """SIGTERM to the worker's group, then SIGKILL after `timeout_s`."""
    if not await remote.is_worker(pid, replica_id):
        return
    await remote.signal_group(pid, "TERM")
    if await _wait_gone(remote, pid, replica_id, timeout_s):
        return
    log.warning("replica %s ignored SIGTERM for %gs; killing it", replica_id, timeout_s)
    await remote.signal_group(pid, "KILL")
    if not await _wait_gone(remote, pid, replica_id, _KILL_WAIT_S):
        where = f"replica {replica_id} (pid {pid}) on host {remote.name}"
        raise ExecutorError(f"{where} survived SIGKILL")


async def _wait_gone(remote: Remote, pid: int, replica_id: str, timeout_s: float) -> bool:
    """Whether the worker exited within `timeout_s` (polled: it is remote)."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                if not await remote.is_worker(pid, replica_id):
                    return True
                await asyncio.sleep(_POLL_S)
    except TimeoutError:
        return False


async def _log_tail(remote: Remote, files: ReplicaFiles) -> str:
    return f"its log ({remote.name}:{files.log}) ends with:\n{await remote.tail(files.log)}"


def _reachable(address: str, host: HostSettings) -> str:
    """The worker reports the interface it bound; a wildcard one is reached
    through the host's address."""
    bound, _, port = address.rpartition(":")
    if bound.strip("[]") not in _WILDCARDS:
        return address
    return f"[{host.address}]:{port}" if ":" in host.address else f"{host.address}:{port}"
