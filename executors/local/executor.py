"""The local executor: replicas are child processes on this machine.

Each replica is `python -m executors.replica` in a session of its own, so it
outlives a crash of the control plane. Everything needed to find it again
lives in `state_dir`:

    replicas/<replica_id>.config.pb   the ReplicaConfig the worker was given
    replicas/<replica_id>.json        the worker's ready file: address, pid, nonce
    logs/<replica_id>.log             the worker's stdout and stderr
    envs/<key>/                       a runtime_env.pip virtualenv, shared by
                                      replicas with the same requirements
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pathlib
import re
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from executors.base import (
    Capabilities,
    Executor,
    ExecutorError,
    LaunchSpec,
    Node,
    ReplicaRef,
    ReplicaStartError,
)
from executors.local import processes
from executors.local.environments import LocalEnvironments
from executors.runtime_env.environment import Environment

_POLL_S = 0.015
_REAP_TIMEOUT_S = 5.0
_REPLICA_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclasses.dataclass(frozen=True)
class LocalSettings:
    """The local executor's config section, validated."""

    num_cpus: float
    # None: ask nvidia-smi on first use.
    gpu_ids: tuple[str, ...] | None = None
    resources: Mapping[str, float] = dataclasses.field(default_factory=dict)
    python: str = sys.executable
    start_timeout_s: float = 60.0
    # How long building a runtime_env (pip install) may take.
    build_timeout_s: float = 900.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LocalSettings:
        """Raises `ValueError` naming the key that is wrong."""
        known = {field.name for field in dataclasses.fields(cls)}
        if unknown := sorted(set(config) - known):
            raise ValueError(f"unknown key {unknown[0]!r}; known keys: {', '.join(sorted(known))}")
        num_cpus = _positive(config, "num_cpus", os.cpu_count() or 1)
        gpu_ids = config.get("gpu_ids")
        if gpu_ids is not None:
            if not isinstance(gpu_ids, list | tuple) or not all(
                isinstance(g, str) for g in gpu_ids
            ):
                raise ValueError(f"gpu_ids must be a list of strings, got {gpu_ids!r}")
            gpu_ids = tuple(gpu_ids)
        resources = config.get("resources", {})
        if not isinstance(resources, Mapping) or not all(
            isinstance(k, str) and _is_amount(v) and v >= 0 for k, v in resources.items()
        ):
            raise ValueError(f"resources must map names to amounts >= 0, got {resources!r}")
        python = config.get("python", sys.executable)
        if not isinstance(python, str) or not python:
            raise ValueError(f"python must be the path of an interpreter, got {python!r}")
        start_timeout_s = _positive(config, "start_timeout_s", 60.0)
        build_timeout_s = _positive(config, "build_timeout_s", 900.0)
        return cls(num_cpus, gpu_ids, dict(resources), python, start_timeout_s, build_timeout_s)


def _is_amount(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _positive(config: Mapping[str, Any], key: str, default: float) -> float:
    value = config.get(key, default)
    if not _is_amount(value) or value <= 0:
        raise ValueError(f"{key} must be a number > 0, got {value!r}")
    return float(value)


class LocalExecutor(Executor):
    """Runs replicas as processes on this machine."""

    name = "local"
    capabilities = Capabilities(
        schedules_itself=False,
        adopts_replicas=True,
        supports_working_dir=True,
        supports_pip=True,
        supports_conda=True,
    )

    def __init__(self, config: Mapping[str, Any], state_dir: pathlib.Path) -> None:
        super().__init__(config, state_dir)
        self.settings = LocalSettings.from_config(config)
        self._replicas = state_dir / "replicas"
        self._logs = state_dir / "logs"
        self._replicas.mkdir(parents=True, exist_ok=True)
        self._logs.mkdir(parents=True, exist_ok=True)
        self._gpu_ids = self.settings.gpu_ids
        self._environments = LocalEnvironments(
            self.settings.python, state_dir / "envs", self.settings.build_timeout_s
        )
        # One task per child we started, awaiting its exit (which reaps it).
        self._exits: dict[str, asyncio.Task[int]] = {}

    async def capacity(self) -> Sequence[Node]:
        if self._gpu_ids is None:
            self._gpu_ids = await processes.detect_gpus()
        settings = self.settings
        return [Node("local", settings.num_cpus, self._gpu_ids, dict(settings.resources))]

    async def prepare(self, spec: LaunchSpec) -> None:
        await self._environments.interpreter(Environment.of(spec))

    async def launch(self, spec: LaunchSpec) -> ReplicaRef:
        replica_id = spec.replica_id
        if not _REPLICA_ID.fullmatch(replica_id):
            raise ExecutorError(
                f"replica_id {replica_id!r} is not a safe file name", retryable=False
            )
        env, cwd = self._environment(spec)
        # Built by prepare; this only looks it up (or builds it, if prepare
        # was skipped).
        python = await self._environments.interpreter(Environment.of(spec))
        config_path = self._replicas / processes.config_name(replica_id)
        ready_path = self._ready_path(replica_id)
        ready_path.unlink(missing_ok=True)
        config_path.write_bytes(spec.config.SerializeToString())
        process = await self._spawn(replica_id, python, config_path, ready_path, env, cwd)
        try:
            record = await self._wait_ready(replica_id, process)
        except BaseException:
            await self._discard(replica_id, process)
            raise
        return self._ref(record)

    async def stop(self, ref: ReplicaRef, timeout_s: float) -> None:
        pid = ref.data.get("pid")
        if pid is None:
            # A ref from elsewhere (such as the store) may lack the pid.
            pid = (processes.read_json(self._ready_path(ref.replica_id)) or {}).get("pid")
        if pid is not None:
            await processes.terminate(int(pid), ref.replica_id, timeout_s)
        if (exited := self._exits.get(ref.replica_id)) is not None:
            await asyncio.wait([exited], timeout=_REAP_TIMEOUT_S)  # our child: reap it
        self._forget(ref.replica_id)

    async def observe(self) -> Sequence[ReplicaRef]:
        refs = []
        for path in sorted(self._replicas.glob("*.json")):
            try:
                record = processes.read_json(path) or {}
                alive = processes.is_worker(int(record["pid"]), record["replica_id"])
            except (ValueError, KeyError, TypeError):
                continue  # a failed start, or a file that is not ours
            if alive:
                refs.append(self._ref(record))
        return refs

    async def close(self) -> None:
        exits = list(self._exits.values())
        for task in exits:
            task.cancel()
        if exits:
            await asyncio.wait(exits)

    def _environment(self, spec: LaunchSpec) -> tuple[dict[str, str], pathlib.Path | None]:
        options = spec.config.deployment.replica_options
        runtime_env = options.runtime_env
        num_cpus = options.num_cpus if options.HasField("num_cpus") else 1.0
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, int(num_cpus)))}
        env.update(runtime_env.env_vars)
        env.update(spec.env)
        env["PYTHONUNBUFFERED"] = "1"
        if not runtime_env.working_dir:
            return env, None
        working_dir = pathlib.Path(runtime_env.working_dir)
        if not working_dir.is_dir():
            message = (
                f"runtime_env.working_dir {str(working_dir)!r} is not a folder on this machine"
            )
            raise ExecutorError(message, retryable=False)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(working_dir), env.get("PYTHONPATH")]))
        return env, working_dir

    async def _spawn(
        self,
        replica_id: str,
        python: str,
        config_path: pathlib.Path,
        ready_path: pathlib.Path,
        env: dict[str, str],
        cwd: pathlib.Path | None,
    ) -> asyncio.subprocess.Process:
        command = [python, "-m", "executors.replica"]
        command += ["--config", str(config_path), "--ready-file", str(ready_path)]
        with self._log_path(replica_id).open("ab") as log:
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

    async def _wait_ready(
        self, replica_id: str, process: asyncio.subprocess.Process
    ) -> dict[str, Any]:
        ready_path = self._ready_path(replica_id)
        exited = self._exits[replica_id]
        timeout_s = self.settings.start_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                while (record := processes.read_json(ready_path)) is None and not exited.done():
                    await asyncio.wait([exited], timeout=_POLL_S)
        except TimeoutError:
            message = f"replica {replica_id} was not ready within {timeout_s:g}s"
            raise ExecutorError(f"{message}; {self._log_tail(replica_id)}") from None
        record = record or processes.read_json(ready_path)
        if record is None:
            message = (
                f"replica {replica_id} exited with code {process.returncode} before it was ready"
            )
            raise ReplicaStartError(f"{message}; {self._log_tail(replica_id)}")
        if "error" in record:
            raise ReplicaStartError(record["error"])
        return record

    async def _discard(self, replica_id: str, process: asyncio.subprocess.Process) -> None:
        # A failed start leaves nothing behind: the worker is killed (it may
        # be exiting already) and reaped before launch raises.
        if process.returncode is None:
            processes.signal_group(process.pid, signal.SIGKILL)
        exited = self._exits.get(replica_id)
        if exited is not None:
            await asyncio.wait([exited], timeout=_REAP_TIMEOUT_S)
        self._forget(replica_id)

    def _ref(self, record: Mapping[str, Any]) -> ReplicaRef:
        replica_id = record["replica_id"]
        return ReplicaRef(
            replica_id=replica_id,
            executor=self.name,
            address=record["address"],
            node="local",
            nonce=record.get("nonce", ""),
            data={"pid": str(record["pid"]), "log": str(self._log_path(replica_id))},
        )

    def _forget(self, replica_id: str) -> None:
        # The log stays: it is how a user finds out why a replica died.
        (self._replicas / processes.config_name(replica_id)).unlink(missing_ok=True)
        self._ready_path(replica_id).unlink(missing_ok=True)

    def _ready_path(self, replica_id: str) -> pathlib.Path:
        return self._replicas / f"{replica_id}.json"

    def _log_path(self, replica_id: str) -> pathlib.Path:
        return self._logs / f"{replica_id}.log"

    def _log_tail(self, replica_id: str) -> str:
        path = self._log_path(replica_id)
        return f"its log ({path}) ends with:\n{processes.tail(path)}"
