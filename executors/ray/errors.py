"""Ray's failures as `ExecutorError`s in plain words.

Ray's own messages run to many lines (tracebacks, pip output); the useful
part is kept and the rest stays in Ray's logs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray.exceptions import RayActorError, RayError, RuntimeEnvSetupError

from executors.base import ExecutorError, NotSupported
from executors.ray import resources
from executors.ray.settings import RaySettings

# Enough of Ray's message to see the cause (pip's last lines, say).
_MESSAGE_CHARS = 1500
# What Ray says when a node has no conda for runtime_env.conda.
_NO_CONDA = "Could not find Conda executable"


def from_ray(replica_id: str, error: RayError) -> ExecutorError:
    """The ExecutorError for a Ray failure while starting a replica."""
    if isinstance(error, RuntimeEnvSetupError):
        # Ray's message is a traceback (or pip's output); its end says why.
        message = f"Ray could not set up the runtime_env of replica {replica_id}: "
        if _NO_CONDA in str(error):
            return NotSupported(
                message + f"runtime_env.conda needs conda on the node ({_NO_CONDA})"
            )
        return ExecutorError(message + _last_lines(error), retryable=False)
    if isinstance(error, RayActorError):
        return ExecutorError(f"the Ray actor of replica {replica_id} died: {_text(error)}")
    return ExecutorError(f"Ray failed to start replica {replica_id}: {_text(error)}")


def not_placed(
    replica_id: str,
    settings: RaySettings,
    need: Mapping[str, float],
    free: Mapping[str, float],
    runtime_env: Mapping[str, Any],
) -> str:
    """Why an actor was still pending at the start deadline."""
    waited = f"{settings.start_timeout_s:g}s"
    have = {name: free.get(name, 0.0) for name in need}
    if short := resources.short_of(need, free):
        return (
            f"Ray cannot place replica {replica_id} within {waited}: needs "
            f"{resources.amounts(need)}, cluster has {resources.amounts(have)} free "
            f"(short of {', '.join(short)})"
        )
    installing = (
        " (its runtime_env may still be installing)" if resources.is_installing(runtime_env) else ""
    )
    return (
        f"Ray did not start the actor of replica {replica_id} within {waited}{installing}; "
        f"it needs {resources.amounts(need)}, cluster has {resources.amounts(have)} free"
    )


def _last_lines(error: BaseException, count: int = 3) -> str:
    lines = [line.strip() for line in str(error).splitlines()]
    useful = [line for line in lines if line and not line.startswith("WARNING")]
    return _text(" ".join(useful[-count:]))


def _text(error: BaseException) -> str:
    text = str(error).strip()
    if len(text) > _MESSAGE_CHARS:
        text = "..." + text[-_MESSAGE_CHARS:]
    return text
