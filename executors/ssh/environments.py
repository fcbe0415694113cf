"""runtime_env.pip and runtime_env.conda on SSH hosts: the builder
(`executors.runtime_env.build`) runs on the host with the host's python,
envs live under the host's workdir (`envs/<key>/`), and the interpreter of
each env is remembered per host connection."""

from __future__ import annotations

import asyncio
import posixpath
import shlex

from executors.runtime_env.environment import Environment, wait_limit_s
from executors.ssh.link import HostLink
from executors.ssh.remote import Remote
from executors.ssh.settings import HostSettings


class HostEnvironments:
    """Hands out the interpreter for an `Environment` on a host, building it
    there first when needed; concurrent requests share one build."""

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        # Per host and env: the connection it was checked on, and the path.
        # A new connection may lead to a rebuilt host, so it checks again
        # (which costs one builder run that finds the env ready).
        self._interpreters: dict[tuple[str, Environment], tuple[Remote, str]] = {}
        self._locks: dict[tuple[str, Environment], asyncio.Lock] = {}

    async def interpreter(self, link: HostLink, env: Environment) -> str:
        """The interpreter a replica with `env` runs on, on `link`'s host.
        Raises `ExecutorError`: retryable when the host cannot be reached,
        not when the env cannot be made."""
        if env.is_default:
            return link.host.python
        key = (link.host.name, env)
        async with self._locks.setdefault(key, asyncio.Lock()):
            remote = await link.remote()
            cached = self._interpreters.get(key)
            if cached is not None and cached[0] is remote:
                return cached[1]
            python = await self._build(remote, link.host, env)
            self._interpreters[key] = (remote, python)
        return python

    async def _build(self, remote: Remote, host: HostSettings, env: Environment) -> str:
        root = posixpath.join(remote.workdir, "envs")
        command = env.builder_command(host.python, root, host.name, self._timeout_s)
        # The host's variables, as its replicas get them: they may be what
        # makes capstan importable there (PYTHONPATH).
        assignments = " ".join(shlex.quote(f"{name}={value}") for name, value in host.env.items())
        script = f"cd {shlex.quote(remote.workdir)} && env {assignments} {shlex.join(command)}"
        # The builder keeps its own deadline: one left running by a lost
        # connection or a cancelled prepare ends by itself (and its lock with it).
        try:
            async with asyncio.timeout(wait_limit_s(self._timeout_s)):
                status, stdout, stderr = await remote.execute(script)
        except TimeoutError:
            raise env.timed_out(host.name, self._timeout_s) from None
        return env.interpreter(status, stdout, stderr, host.name)
