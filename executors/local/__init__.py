"""The local executor: replicas as processes on this machine."""

from executors.local.executor import LocalExecutor, LocalSettings

__all__ = ["LocalExecutor", "LocalSettings"]
