"""SQLite store: deployments with their version history, applications,
replicas with where they run, and an append-only event log. After a crash
the store is the truth.

One connection on one thread (connection.py): every call runs there, off the
event loop, so there is exactly one writer. Each table's part of the store is
a layer over the one below it, and `Store` is the whole stack:

    connection -> events -> deployments -> rollout -> applications
    connection -> replicas
"""

from __future__ import annotations

from controlplane.store.applications import Applications
from controlplane.store.connection import Retention
from controlplane.store.replicas import Replicas
from controlplane.store.schema import SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION", "Retention", "Store"]


class Store(Applications, Replicas):
    """The control plane's durable state. Open with `await Store.open(path)`."""
