"""SQLite databases of ketch's stores: created once with their schema, in WAL mode.

Each store (image metadata, snapshots, and later the engine's state) keeps its
own database and its own transaction rules; what they share is how a database
comes to exist, which is here.
"""

from __future__ import annotations

import sqlite3

from ketch.errors import System


def create_schema(path: str, schema: str, what: str) -> None:
    """Make ``path`` a WAL database holding ``schema`` (idempotent DDL)."""
    try:
        db = sqlite3.connect(path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(schema)
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise System(f"creating {what} {path}: {exc}") from exc
