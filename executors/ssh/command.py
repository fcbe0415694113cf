"""The shell command that starts a replica worker on a host, detached from
the SSH session so that it outlives the connection and the control plane."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping

from capstan.sections import ENV_NAME_PATTERN
from executors import worker_process
from executors.base import LaunchSpec, NotSupported
from executors.ssh.settings import HostSettings
from executors.worker_process import WorkerFiles

_ENV_NAME = re.compile(ENV_NAME_PATTERN)


def worker_env(spec: LaunchSpec, host: HostSettings) -> dict[str, str]:
    """The worker's variables: the host's own, then the spec's. Raises
    `NotSupported` for a name a shell cannot assign."""
    if bad := [name for name in spec.env if not _ENV_NAME.fullmatch(name)]:
        raise NotSupported(
            f"runtime_env.env_vars: {bad[0]!r} is not a variable name a shell on an SSH host "
            "accepts (letters, digits and '_', not starting with a digit)"
        )
    # The log must show the user's prints as they happen, not at exit.
    return {**host.env, **spec.env, "PYTHONUNBUFFERED": "1"}


def start_script(
    python: str, workdir: str, files: WorkerFiles, host: str, env: Mapping[str, str]
) -> str:
    """A POSIX sh script that starts the worker on `python` (the host's, or
    its runtime_env's) in a session of its own (setsid: its pid is its
    process group, so stop can signal the group) and prints its pid.
    Everything from the spec is quoted."""
    assignments = " ".join(shlex.quote(f"{name}={value}") for name, value in env.items())
    worker = worker_process.command(python, files, host)
    return (
        f"cd {shlex.quote(workdir)} || exit 1\n"
        f"env {assignments} setsid nohup {shlex.join(worker)}"
        f" >> {shlex.quote(files.log)} 2>&1 < /dev/null &\n"
        "echo $!\n"
    )
