"""The shell command that starts a replica worker on a host, detached from
the SSH session so that it outlives the connection and the control plane."""

from __future__ import annotations

import shlex
from collections.abc import Mapping

from executors.base import ExecutorError, LaunchSpec
from executors.ssh.remote import ReplicaFiles
from executors.ssh.settings import HostSettings, env_vars


def worker_env(spec: LaunchSpec, host: HostSettings) -> dict[str, str]:
    """The worker's variables: the host's own, then the runtime_env's, then
    what the placement implies (CUDA_VISIBLE_DEVICES, OMP_NUM_THREADS)."""
    options = spec.config.deployment.replica_options
    runtime_env = options.runtime_env
    num_cpus = options.num_cpus if options.HasField("num_cpus") else 1.0
    env = {"OMP_NUM_THREADS": str(max(1, int(num_cpus)))}
    env.update(host.env)
    env.update(runtime_env.env_vars)
    env.update(spec.env)
    # The log must show the user's prints as they happen, not at exit.
    env["PYTHONUNBUFFERED"] = "1"
    try:
        return env_vars(env, "runtime_env.env_vars")
    except ValueError as error:
        raise ExecutorError(str(error), retryable=False) from error


def start_script(python: str, workdir: str, files: ReplicaFiles, env: Mapping[str, str]) -> str:
    """A POSIX sh script that starts the worker on `python` (the host's, or
    its runtime_env's) in a session of its own (setsid: its pid is its
    process group, so stop can signal the group) and prints its pid.
    Everything from the spec is quoted."""
    assignments = " ".join(shlex.quote(f"{name}={value}") for name, value in env.items())
    worker = [python, "-m", "executors.replica"]
    worker += ["--config", files.config, "--ready-file", files.ready]
    return (
        f"cd {shlex.quote(workdir)} || exit 1\n"
        f"env {assignments} setsid nohup {shlex.join(worker)}"
        f" >> {shlex.quote(files.log)} 2>&1 < /dev/null &\n"
        "echo $!\n"
    )
