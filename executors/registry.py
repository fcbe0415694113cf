"""Finding executor plugins: built-in and third-party alike are Python entry
points in the group `capstan.executors`, and the entry point's name is the
executor's name. A plugin is checked when it is loaded, so a broken one
fails the control plane's start-up with a message naming it.
"""

from __future__ import annotations

import importlib.metadata
import pathlib
from collections.abc import Mapping
from typing import Any

from capstan.sections import SettingsError
from executors.base import Executor, ExecutorError

GROUP = "capstan.executors"


class PluginError(ExecutorError):
    """An executor plugin is unknown, or could not be loaded."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


def executor_names() -> list[str]:
    """The names of every installed executor plugin, sorted."""
    return sorted({point.name for point in importlib.metadata.entry_points(group=GROUP)})


def executor_class(name: str) -> type[Executor]:
    """The Executor subclass registered as `name`. Raises `PluginError`."""
    points = [p for p in importlib.metadata.entry_points(group=GROUP) if p.name == name]
    if not points:
        known = ", ".join(executor_names()) or "none"
        raise PluginError(f"no executor named {name!r}; installed executors: {known}")
    point = points[0]
    try:
        cls = point.load()
    except Exception as error:
        message = (
            f"executor {name!r} ({point.value}) failed to load: {type(error).__name__}: {error}"
        )
        raise PluginError(message) from error
    if not (isinstance(cls, type) and issubclass(cls, Executor)):
        raise PluginError(f"executor {name!r} ({point.value}) is not an Executor subclass")
    if getattr(cls, "name", None) != name:
        declared = getattr(cls, "name", None)
        raise PluginError(f"executor {name!r} ({point.value}) calls itself {declared!r}")
    return cls


def load_executor(name: str, config: Mapping[str, Any], state_dir: pathlib.Path) -> Executor:
    """Constructs the executor registered as `name` with its config section.

    Raises `PluginError` for an unknown or broken plugin, and `ValueError`
    naming the key path for a bad config (`executors.ssh.hosts.0.port: ...`)."""
    cls = executor_class(name)
    try:
        return cls(config, state_dir)
    except SettingsError as error:
        raise error.under(f"executors.{name}") from None
    except ValueError as error:
        raise ValueError(f"executors.{name}: {error}") from error
