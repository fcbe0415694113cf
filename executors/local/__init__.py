"""The local executor: replicas as processes on this machine."""

from executors.local.executor import LocalExecutor
from executors.local.settings import LocalSettings

__all__ = ["LocalExecutor", "LocalSettings"]
