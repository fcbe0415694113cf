"""A scripted Executor for control-plane tests: real gRPC replicas, no processes."""

from tests.scripted_executor.executor import ScriptedExecutor, ScriptedReplica, World

__all__ = ["ScriptedExecutor", "ScriptedReplica", "World"]
