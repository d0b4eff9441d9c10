"""Opening an SQLite database of the data directory in WAL mode, for every store that keeps
one (the event log, the data keys, the integrated audit log).

Switching a fresh file into WAL mode upgrades a read lock to a write lock inside SQLite
(`sqlite3BtreeSetVersion`), and an upgrade does not wait on the busy handler: two processes
opening a new data directory at once could see the second fail at once with "database is
locked", whatever the connection's timeout. The switch is retried here until the timeout.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

_BUSY = 5  # SQLITE_BUSY; extended codes keep it in their low byte


def open_wal(path: Path | str, *, secure_delete: bool, timeout_s: float = 30.0,
             ) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are the caller's BEGIN IMMEDIATE), WAL
    journal, full sync, and where the store holds personal data, deleted content zeroed.
    Raises sqlite3.Error as sqlite3 does; the caller names the file."""
    db = sqlite3.connect(path, isolation_level=None, timeout=timeout_s)
    try:
        _journal_wal(db, timeout_s)
        db.execute("PRAGMA synchronous=FULL")
        if secure_delete:
            db.execute("PRAGMA secure_delete=ON")
    except BaseException:
        db.close()
        raise
    return db


def _journal_wal(db: sqlite3.Connection, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    pause = 0.002
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != _BUSY or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)
