"""Who is running this code: the replica's identity, set by the replica
worker before the user's class is constructed, read by user code through
`serve.get_replica_context()`. Stdlib only: replica workers import it."""

from __future__ import annotations

import contextvars
import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class ReplicaID:
    """A replica's identity, as Ray Serve 2.x's `ReplicaID`."""

    unique_id: str
    deployment_name: str
    app_name: str = ""

    def to_full_id_str(self) -> str:
        prefix = f"{self.app_name}#" if self.app_name else ""
        return f"{prefix}{self.deployment_name}#{self.unique_id}"

    def __str__(self) -> str:
        return self.to_full_id_str()


@dataclasses.dataclass(frozen=True)
class ReplicaContext:
    """What `serve.get_replica_context()` returns inside a replica."""

    replica_id: ReplicaID
    servable_object: Any = None

    @property
    def app_name(self) -> str:
        return self.replica_id.app_name

    @property
    def deployment(self) -> str:
        return self.replica_id.deployment_name

    @property
    def replica_tag(self) -> str:
        """Ray Serve 1.x's name for the replica's unique id."""
        return self.replica_id.unique_id


_current: ReplicaContext | None = None


def set_replica_context(replica_id: ReplicaID) -> None:
    """Called once by the replica worker, before user code runs."""
    global _current
    _current = ReplicaContext(replica_id)


def set_servable_object(instance: Any) -> None:
    """Called by the replica worker once the user's class is constructed."""
    global _current
    if _current is not None:
        _current = dataclasses.replace(_current, servable_object=instance)


def current_replica_context() -> ReplicaContext | None:
    """This process's replica context, or None outside a replica."""
    return _current


# -- model multiplexing ----------------------------------------------------------

_model_id: contextvars.ContextVar[str] = contextvars.ContextVar("multiplexed_model_id", default="")
_loaded_models: tuple[int, tuple[str, ...]] = (0, ())


def get_multiplexed_model_id() -> str:
    """The model id the current request asked for ("" when none)."""
    return _model_id.get()


def set_multiplexed_model_id(model_id: str) -> None:
    """Called by the replica worker inside each request's own task."""
    _model_id.set(model_id)


def set_loaded_models(model_ids: tuple[str, ...]) -> None:
    """Called by `serve.multiplexed` whenever the replica's models change."""
    global _loaded_models
    _loaded_models = (_loaded_models[0] + 1, model_ids)


def loaded_models() -> tuple[int, tuple[str, ...]]:
    """(revision, model ids): the revision changes whenever the ids do."""
    return _loaded_models
