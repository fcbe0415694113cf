"""Replica user_configs, stored once per distinct text.

Every replica row records the user_config it runs with. A thousand replicas
of a deployment whose user_config is 1 MiB would write (and read back) a
gigabyte if each row held the text, so a row holds a reference,
"sha256:<hex>", to the one stored copy. JSON never starts with "s", so a row
written before (holding the text itself) still reads as it was.
"""

from __future__ import annotations

import hashlib
import sqlite3

SCHEMA = """
CREATE TABLE IF NOT EXISTS user_configs (
    digest TEXT PRIMARY KEY,
    text TEXT NOT NULL
);
"""
_PREFIX = "sha256:"


class ReplicaConfigs:
    """Used on the store's thread, inside its transactions."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._texts: dict[str, str] = {}  # read back once, shared by every replica

    def reference(self, text: str | None) -> str | None:
        """Stores `text` unless stored already; returns what a row holds."""
        if text is None:
            return None
        digest = _PREFIX + hashlib.sha256(text.encode()).hexdigest()
        self._conn.execute(
            "INSERT OR IGNORE INTO user_configs (digest, text) VALUES (?, ?)", (digest, text)
        )
        return digest

    def text(self, stored: str | None) -> str | None:
        """The user_config a row's reference stands for."""
        if stored is None or not stored.startswith(_PREFIX):
            return stored
        if stored not in self._texts:
            row = self._conn.execute(
                "SELECT text FROM user_configs WHERE digest = ?", (stored,)
            ).fetchone()
            if row is None:
                raise RuntimeError(f"state.db has no user_config {stored}")
            self._texts[stored] = row[0]
        return self._texts[stored]

    def forget_unused(self) -> None:
        """Drops the texts no replica refers to any more."""
        self._conn.execute(
            """DELETE FROM user_configs WHERE digest NOT IN (
                   SELECT user_config FROM replicas WHERE user_config IS NOT NULL)"""
        )
        self._texts.clear()
