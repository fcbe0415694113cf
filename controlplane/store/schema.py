"""The store's tables, and opening the database file they live in.

Schema 1 is what the first release wrote; tables added since are created
where missing (`_ADDITIONS`), so an older state.db opens unchanged.
"""

from __future__ import annotations

import pathlib
import sqlite3

from controlplane.replica_configs import SCHEMA as _CONFIGS_SCHEMA

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE deployments (
    name TEXT PRIMARY KEY,
    spec BLOB NOT NULL,
    version TEXT NOT NULL,
    code_hash TEXT NOT NULL,
    route_prefix TEXT,
    generation INTEGER NOT NULL,
    state INTEGER NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    stable_spec BLOB,
    stable_version TEXT,
    is_halted INTEGER NOT NULL DEFAULT 0,
    is_deleting INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE deployment_versions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    generation INTEGER NOT NULL,
    spec BLOB NOT NULL,
    applied_at REAL NOT NULL
);
CREATE INDEX deployment_versions_by_name ON deployment_versions (name, id);
CREATE TABLE replicas (
    id TEXT PRIMARY KEY,
    deployment TEXT NOT NULL,
    version TEXT NOT NULL,
    code_hash TEXT NOT NULL,
    state INTEGER NOT NULL,
    executor TEXT NOT NULL,
    node TEXT NOT NULL DEFAULT '',
    address TEXT NOT NULL DEFAULT '',
    ref TEXT,
    placement TEXT,
    user_config TEXT,
    max_concurrent_queries INTEGER NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    started_at REAL NOT NULL
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    deployment TEXT NOT NULL,
    replica TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX events_by_deployment ON events (deployment, id);
"""
# Tables added after schema 1 shipped: created where missing, so an older
# state.db opens unchanged.
_ADDITIONS = """
CREATE TABLE IF NOT EXISTS applications (
    name TEXT PRIMARY KEY,
    route_prefix TEXT,
    ingress TEXT NOT NULL,
    deployments TEXT NOT NULL,
    generation INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS application_sources (
    name TEXT PRIMARY KEY,
    source TEXT NOT NULL
);
"""

_WAL_LIMIT_BYTES = 16 << 20


def connect(path: pathlib.Path) -> sqlite3.Connection:
    """Opens the database at `path`, creating it and its tables if needed.
    Raises RuntimeError if it was written by a schema this code does not know."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE), see StoreBase.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA busy_timeout = 5000")
    # A checkpointed WAL is cut back to this, not left at its largest.
    conn.execute(f"PRAGMA journal_size_limit = {_WAL_LIMIT_BYTES}")
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found == 0:
        conn.executescript(f"BEGIN; {_SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
    elif found != SCHEMA_VERSION:
        conn.close()
        raise RuntimeError(
            f"{path} has schema version {found}; this control plane knows {SCHEMA_VERSION}"
        )
    conn.executescript(f"BEGIN; {_ADDITIONS} {_CONFIGS_SCHEMA} COMMIT;")
    return conn
