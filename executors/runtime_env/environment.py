"""The executor's side of runtime_env.pip and runtime_env.conda: which
interpreter a replica needs, the builder command that makes it on a node,
and what that command's result means.

The building itself happens on the node (`executors.runtime_env.build`), so
the local and SSH executors share it and differ only in how they run it.
"""

from __future__ import annotations

import dataclasses
import json

from executors.base import ExecutorError, NotSupported
from executors.options import ReplicaOptions

BUILDER = "executors.runtime_env.build"
# The builder's exit status for an env the node cannot make (no conda
# there); the same as `build.EXIT_UNSUPPORTED`, which cannot be imported:
# the builder runs on interpreters that have only the standard library.
_EXIT_UNSUPPORTED = 4
# Beyond the builder's own deadline, for its start and a slow link.
_GRACE_S = 30.0


@dataclasses.dataclass(frozen=True)
class Environment:
    """The interpreter a replica runs on: the executor's own (neither field
    set), a virtualenv with `pip` installed, or the existing conda env `conda`."""

    pip: tuple[str, ...] = ()
    conda: str = ""

    @classmethod
    def of(cls, options: ReplicaOptions) -> Environment:
        return cls(pip=options.pip, conda=options.conda)

    @property
    def is_default(self) -> bool:
        """Whether the executor's own interpreter serves: nothing to build."""
        return not (self.pip or self.conda)

    def describe(self) -> str:
        if self.conda:
            return f"runtime_env.conda {self.conda!r}"
        return f"runtime_env.pip {list(self.pip)}"

    def builder_command(self, python: str, root: str, node: str, timeout_s: float) -> list[str]:
        """The command that makes this env on `node` with `python` (the
        interpreter replicas would otherwise run on), keeping envs in `root`."""
        command = [python, "-m", BUILDER, "--root", root, "--node", node]
        command += ["--timeout-s", f"{timeout_s:g}"]
        if self.conda:
            return [*command, "--conda", self.conda]
        return [*command, "--pip-json", json.dumps(list(self.pip))]

    def interpreter(self, exit_status: int | None, stdout: str, stderr: str, node: str) -> str:
        """The env's interpreter from the builder's result; a failed build is
        an `ExecutorError` that retrying cannot fix, carrying the builder's
        message (pip's own output, for a failed install); `NotSupported`
        when the node cannot make such an env at all."""
        if exit_status == 0:
            if python := _printed_python(stdout):
                return python
            stderr = f"the builder printed {stdout.strip()[-500:]!r}"
        detail = stderr.strip() or f"the builder exited with {exit_status}"
        message = f"{self.describe()} could not be prepared on node {node}: {detail}"
        if exit_status == _EXIT_UNSUPPORTED:
            raise NotSupported(message)
        raise ExecutorError(message, retryable=False)

    def timed_out(self, node: str, timeout_s: float) -> ExecutorError:
        message = f"{self.describe()} was not ready on node {node} within {timeout_s:g}s"
        return ExecutorError(message, retryable=False)


def wait_limit_s(build_timeout_s: float) -> float:
    """How long an executor waits for the builder: its own deadline and some."""
    return build_timeout_s + _GRACE_S


def _printed_python(stdout: str) -> str:
    """The path in the builder's last line, `{"python": PATH}`; "" if absent."""
    try:
        python = json.loads(stdout.strip().splitlines()[-1])["python"]
    except (ValueError, IndexError, KeyError, TypeError):
        return ""
    return python if isinstance(python, str) else ""
