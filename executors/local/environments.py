"""runtime_env.pip and runtime_env.conda on this machine: the builder
(`executors.runtime_env.build`) runs as a child process, envs live under the
executor's state folder (so they outlive control-plane restarts), and the
interpreter of each env is remembered once known."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import signal

from executors.base import ExecutorError
from executors.local import processes
from executors.runtime_env.build import READY
from executors.runtime_env.environment import Environment, wait_limit_s
from executors.runtime_env.garbage import collect, env_of

NODE = "local"


class LocalEnvironments:
    """Hands out the interpreter for an `Environment`, building it first
    when needed; concurrent requests for one env share one build."""

    def __init__(self, python: str, root: pathlib.Path, timeout_s: float) -> None:
        self._python = python
        self._root = root
        self._timeout_s = timeout_s
        self._interpreters: dict[Environment, str] = {}
        self._locks: dict[Environment, asyncio.Lock] = {}

    async def interpreter(self, env: Environment) -> str:
        """The interpreter a replica with `env` runs on. Raises
        `ExecutorError(retryable=False)` when the env cannot be made."""
        if env.is_default:
            return self._python
        async with self._locks.setdefault(env, asyncio.Lock()):
            python = self._interpreters.get(env)
            if python is None or not await asyncio.to_thread(_reuse, python, self._root):
                python = self._interpreters[env] = await self._build(env)
        return python

    def collect(self, in_use: set[str], now_s: float) -> list[str]:
        """Removes idle envs no live replica runs on (blocking: run in a thread)."""
        return collect(self._root, in_use, now_s) if self._root.is_dir() else []

    def env_of(self, interpreter: str) -> str | None:
        """The env an interpreter belongs to, if it is one of ours."""
        return env_of(interpreter, self._root)

    async def _build(self, env: Environment) -> str:
        command = env.builder_command(self._python, str(self._root), NODE, self._timeout_s)
        try:
            # Its own session, so that a timeout or a cancelled prepare can
            # stop pip too, not the builder alone.
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as error:
            message = f"cannot start {self._python!r} to prepare {env.describe()}: {error}"
            raise ExecutorError(message, retryable=False) from error
        try:
            async with asyncio.timeout(wait_limit_s(self._timeout_s)):
                stdout, stderr = await process.communicate()
        except TimeoutError:
            raise env.timed_out(NODE, self._timeout_s) from None
        finally:
            if process.returncode is None:
                processes.signal_group(process.pid, signal.SIGKILL)
                await process.wait()
        return env.interpreter(process.returncode, stdout.decode(), stderr.decode(), NODE)


def _reuse(python: str, root: pathlib.Path) -> bool:
    """Whether a remembered interpreter is still there (an idle env may have
    been collected); marks its env as used, so that it is not idle."""
    if not os.path.exists(python):
        return False
    if (key := env_of(python, root)) is not None:
        with contextlib.suppress(OSError):
            (root / key / READY).touch()
    return True
