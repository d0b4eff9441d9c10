"""SQLite plumbing every embedded store shares: error translation, write transactions, reads,
and the append-only audit table (with the triggers that keep it so)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from broker.errors import StorageError, TransientBackendError

AUDIT_TABLE = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    entry BLOB NOT NULL,
    entry_hash TEXT NOT NULL
);
"""


def append_only(*tables: str) -> str:
    """Triggers that refuse UPDATE and DELETE on each table."""
    return "\n".join(
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_{action.lower()} BEFORE {action} "
        f"ON {table} BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END;"
        for table in tables for action in ("UPDATE", "DELETE"))


def translate(exc: sqlite3.Error, path: Path) -> StorageError:
    """A busy database is worth another try; anything else names the file and the error."""
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and "locked" in text:
        return TransientBackendError(f"{path}: database is busy ({text}); try again")
    return StorageError(f"{path}: {text}")


@contextmanager
def write_transaction(db: sqlite3.Connection, path: Path) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back when the body raises."""
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        raise translate(exc, path) from exc


def read_rows(db: sqlite3.Connection, path: Path, sql: str,
              args: tuple[Any, ...] = ()) -> list[Any]:
    try:
        return db.execute(sql, args).fetchall()
    except sqlite3.Error as exc:
        raise translate(exc, path) from exc
