"""The scripted executor: a test plugin registered as `scripted` in the
`capstan.executors` entry-point group. Its replicas are real replica workers
(the user's code, the real ReplicaService) served from the test process,
following a script that a `World` holds."""

from scripted_executor.executor import ScriptedExecutor
from scripted_executor.replica import ScriptedReplica
from scripted_executor.world import World

__all__ = ["ScriptedExecutor", "ScriptedReplica", "World"]
