"""The local executor: replicas are child processes on this machine.

Each replica is the worker process of `executors.worker_process`, in a
session of its own, so it outlives a crash of the control plane. Everything
needed to find it again lives in `state_dir` (the worker's files, as that
module lays them out), `envs/<key>/` holds a runtime_env.pip virtualenv,
shared by replicas with the same requirements, and `packages/<sha256>/` an
uploaded package, unpacked once for every replica that runs in it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import signal
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, BinaryIO

from executors import worker_process
from executors.base import (
    Capabilities,
    Executor,
    ExecutorError,
    LaunchSpec,
    Node,
    ReplicaRef,
)
from executors.local import processes
from executors.local.environments import LocalEnvironments
from executors.local.settings import LocalSettings
from executors.log_file import read_log_file, rotate
from executors.runtime_env.environment import Environment
from executors.runtime_env.unpack import UnpackError, unpack
from executors.worker_process import Ready, WorkerFiles

log = logging.getLogger("capstan.executors.local")
_REAP_TIMEOUT_S = 5.0
# Replica logs past this size are rotated (copied to .1, .2, ... and
# truncated) and idle pip envs removed, checked this often.
_LOG_MAX_BYTES = 64 << 20
_LOG_BACKUPS = 3
_CLEANUP_PERIOD_S = 60.0
# Local replicas are reached from this machine only, so they need no TLS.
_LOOPBACK = "127.0.0.1"
_PROCESSES = processes.LocalProcesses()


class LocalExecutor(Executor):
    """Runs replicas as processes on this machine."""

    name = "local"
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
        self.settings = LocalSettings.from_config(config)
        # Absolute: a worker with a working_dir starts in another folder.
        self._root = str(state_dir.resolve())
        self._replicas = state_dir / "replicas"
        self._replicas.mkdir(parents=True, exist_ok=True)
        (state_dir / "logs").mkdir(parents=True, exist_ok=True)
        gpu_ids = self.settings.gpu_ids
        self._gpu_ids = None if gpu_ids is None else tuple(gpu_ids)
        self._environments = LocalEnvironments(
            self.settings.python, state_dir / "envs", self.settings.build_timeout_s
        )
        self._next_cleanup_mono_s = 0.0
        # One task per child we started, awaiting its exit (which reaps it).
        self._exits: dict[str, asyncio.Task[int]] = {}

    async def capacity(self) -> Sequence[Node]:
        if self._gpu_ids is None:
            self._gpu_ids = await processes.detect_gpus()
        settings = self.settings
        return [Node("local", settings.num_cpus, self._gpu_ids, dict(settings.resources))]

    async def prepare(self, spec: LaunchSpec) -> None:
        await self._environments.interpreter(Environment.of(spec.options))

    async def launch(self, spec: LaunchSpec) -> ReplicaRef:
        replica_id = spec.replica_id
        files = self._files(replica_id)
        env, cwd = await self._environment(spec)
        # Built by prepare; this only looks it up (or builds it, if prepare
        # was skipped).
        python = await self._environments.interpreter(Environment.of(spec.options))
        _write_config(files, spec.config.SerializeToString())
        process = await self._spawn(replica_id, python, files, env, cwd)
        try:
            ready = await self._wait_ready(replica_id)
        except BaseException:
            await self._discard(replica_id, process)
            raise
        return self._ref(ready)

    async def stop(self, ref: ReplicaRef, timeout_s: float) -> None:
        pid = ref.data.get("pid")
        if pid is None:
            # A ref from elsewhere (such as the store) may lack the pid.
            ready = self._read_ready(ref.replica_id)
            pid = None if ready is None else ready.pid
        if pid is not None:
            await worker_process.terminate(_PROCESSES, int(pid), ref.replica_id, timeout_s)
        if (exited := self._exits.get(ref.replica_id)) is not None:
            await asyncio.wait([exited], timeout=_REAP_TIMEOUT_S)  # our child: reap it
        self._forget(ref.replica_id)

    async def observe(self) -> Sequence[ReplicaRef]:
        refs = await self._running()
        if time.monotonic() >= self._next_cleanup_mono_s:  # observe runs every pass
            self._next_cleanup_mono_s = time.monotonic() + _CLEANUP_PERIOD_S
            await asyncio.to_thread(self._clean_up, [int(ref.data["pid"]) for ref in refs])
        return refs

    def _clean_up(self, live_pids: list[int]) -> None:
        """Rotates large logs; removes pip envs idle for long that no live
        replica runs on."""
        rotate(self.state_dir / "logs", _LOG_MAX_BYTES, _LOG_BACKUPS)
        in_use = {self._environments.env_of(python) for python in processes.commands(live_pids)}
        for key in self._environments.collect({k for k in in_use if k}, time.time()):
            log.info("removed pip environment %s: idle and used by no replica", key)

    async def _running(self) -> list[ReplicaRef]:
        refs = []
        for path in sorted(self._replicas.glob("*.json")):
            try:
                ready = Ready.parse(path.read_text())
            except (OSError, ValueError, ExecutorError):
                continue  # gone meanwhile, a failed start, or a file that is not ours
            if processes.is_worker(ready.pid, ready.replica_id):
                refs.append(self._ref(ready))
        return refs

    async def close(self) -> None:
        exits = list(self._exits.values())
        for task in exits:
            task.cancel()
        if exits:
            await asyncio.wait(exits)

    async def _environment(self, spec: LaunchSpec) -> tuple[dict[str, str], pathlib.Path | None]:
        env = {**os.environ, **spec.env, "PYTHONUNBUFFERED": "1"}
        working_dir = await self._working_dir(spec)
        if working_dir is None:
            return env, None
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(working_dir), env.get("PYTHONPATH")]))
        return env, working_dir

    async def _working_dir(self, spec: LaunchSpec) -> pathlib.Path | None:
        """The folder the replica starts in: an uploaded package unpacked
        once into `packages/<sha256>/`, or a folder on this machine."""
        if spec.options.is_package:
            archive = spec.package_archive()
            target = pathlib.Path(self._root) / "packages" / archive.sha256
            try:
                await asyncio.to_thread(unpack, pathlib.Path(archive.path), archive.format, target)
            except UnpackError as error:
                raise ExecutorError(str(error), retryable=False) from error
            return target
        return _local_folder(spec.options.working_dir) if spec.options.working_dir else None

    async def _spawn(
        self,
        replica_id: str,
        python: str,
        files: WorkerFiles,
        env: dict[str, str],
        cwd: pathlib.Path | None,
    ) -> asyncio.subprocess.Process:
        command = worker_process.command(python, files, _LOOPBACK)
        with _open_log(files) as log:
            try:
                process = await asyncio.create_subprocess_exec(
                    *command,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                    env=env,
                    cwd=cwd,
                    start_new_session=True,
                )
            except OSError as error:
                self._forget(replica_id)
                raise ExecutorError(f"cannot start {command[0]!r} (python): {error}") from error
        exited = asyncio.get_running_loop().create_task(process.wait())
        self._exits[replica_id] = exited
        exited.add_done_callback(lambda _: self._exits.pop(replica_id, None))
        return process

    async def _wait_ready(self, replica_id: str) -> Ready:
        ready_path = pathlib.Path(self._files(replica_id).ready)
        exited = self._exits[replica_id]

        async def read() -> str | None:
            return processes.read_text(ready_path)

        async def is_running() -> bool:
            return not exited.done()

        async def log_tail() -> str:
            return self._log_tail(replica_id)

        timeout_s = self.settings.start_timeout_s
        where = f"replica {replica_id}"
        return await worker_process.wait_ready(read, is_running, timeout_s, where, log_tail)

    async def _discard(self, replica_id: str, process: asyncio.subprocess.Process) -> None:
        # A failed start leaves nothing behind: the worker is killed (it may
        # be exiting already) and reaped before launch raises.
        if process.returncode is None:
            processes.signal_group(process.pid, signal.SIGKILL)
        exited = self._exits.get(replica_id)
        if exited is not None:
            await asyncio.wait([exited], timeout=_REAP_TIMEOUT_S)
        self._forget(replica_id)

    def _ref(self, ready: Ready) -> ReplicaRef:
        return ReplicaRef(
            replica_id=ready.replica_id,
            executor=self.name,
            address=ready.address,
            node="local",
            nonce=ready.nonce,
            tls=ready.tls,
            data={"pid": str(ready.pid), "log": self._files(ready.replica_id).log},
        )

    def read_log(self, ref: ReplicaRef, since_s: float, follow: bool) -> AsyncIterator[str]:
        path = pathlib.Path(self._files(ref.replica_id).log)
        return read_log_file(path, time.time() - since_s if since_s > 0 else None, follow)

    def _read_ready(self, replica_id: str) -> Ready | None:
        try:
            return Ready.parse(pathlib.Path(self._files(replica_id).ready).read_text())
        except (OSError, ValueError, ExecutorError):
            return None

    def _forget(self, replica_id: str) -> None:
        # The log stays: it is how a user finds out why a replica died.
        files = self._files(replica_id)
        pathlib.Path(files.config).unlink(missing_ok=True)
        pathlib.Path(files.ready).unlink(missing_ok=True)

    def _files(self, replica_id: str) -> WorkerFiles:
        return WorkerFiles.under(self._root, replica_id)

    def _log_tail(self, replica_id: str) -> str:
        path = pathlib.Path(self._files(replica_id).log)
        return f"its log ({path}) ends with:\n{processes.tail(path)}"


def _local_folder(working_dir: str) -> pathlib.Path:
    folder = pathlib.Path(working_dir)
    if not folder.is_dir():
        message = f"runtime_env.working_dir {working_dir!r} is not a folder on this machine"
        raise ExecutorError(message, retryable=False)
    return folder


def _write_config(files: WorkerFiles, config: bytes) -> None:
    # A ready file left from an earlier start must not read as this one's.
    pathlib.Path(files.ready).unlink(missing_ok=True)
    # Only this user may read it: it holds the cluster secret and user code.
    path = pathlib.Path(files.config)
    path.unlink(missing_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as file:
        file.write(config)


def _open_log(files: WorkerFiles) -> BinaryIO:
    return pathlib.Path(files.log).open("ab")
