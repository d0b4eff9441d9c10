"""Opening a store's database while another process is creating it (broker/sqlite_wal.py).

CI run of stop 19 failed on this: four `ingest` processes on one fresh data directory, one
refused with "database is busy (database is locked)". Switching a new file into WAL mode
upgrades a read lock to a write lock, and SQLite does not wait on the busy handler for an
upgrade; a rival holding the write lock (a RESERVED lock, here a BEGIN IMMEDIATE) made the
switch fail at once, whatever the connection's 30 s timeout."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from broker.audit.sequencer import AuditSequencer
from broker.audit.sqlite_integrated import DB_NAME, IntegratedAuditDb
from broker.backends.embedded.event_log import SqliteEventLog
from broker.model.schemas import SchemaRegistry
from broker.sqlite_wal import open_wal

SCHEMA = SchemaRegistry(Path(__file__).resolve().parents[2] / "schemas").get(
    "records.audit_entry")


@contextmanager
def rival_writer(path: Path, release_after_s: float | None) -> Iterator[None]:
    """Another connection made `path` (rollback journal, one table) and holds its write
    lock, released after `release_after_s` (never, for None, until the block ends)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    rival = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    rival.execute("CREATE TABLE rival (a INTEGER)")
    rival.execute("BEGIN IMMEDIATE")
    rival.execute("INSERT INTO rival VALUES (1)")
    timer = threading.Timer(release_after_s or 0, lambda: rival.execute("COMMIT"))
    if release_after_s is not None:
        timer.start()
    try:
        yield
    finally:
        timer.join() if release_after_s is not None else rival.execute("ROLLBACK")
        rival.close()


def test_plain_sqlite_fails_at_once_here_which_is_what_open_wal_retries(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    with rival_writer(path, None):
        db = sqlite3.connect(path, isolation_level=None, timeout=30.0)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            db.execute("PRAGMA journal_mode=WAL")
        db.close()


def test_open_wal_waits_for_the_rival_and_sees_its_commit(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    with rival_writer(path, 0.3):
        db = open_wal(path, secure_delete=True)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA secure_delete").fetchone()[0] == 1
        assert db.execute("SELECT a FROM rival").fetchall() == [(1,)]
        db.close()


def test_open_wal_gives_up_at_its_timeout_with_sqlites_error(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    with rival_writer(path, None), \
            pytest.raises(sqlite3.OperationalError, match="database is locked"):
        open_wal(path, secure_delete=False, timeout_s=0.2)


def _event_log(data: Path) -> Callable[[], object]:
    return lambda: SqliteEventLog(data / "broker.db", SCHEMA,
                                  AuditSequencer(SCHEMA, origin="test/wal"))


def _integrated(data: Path) -> Callable[[], object]:
    return lambda: IntegratedAuditDb(data, AuditSequencer(SCHEMA, origin="test/wal"))


@pytest.mark.parametrize(("name", "opener"), [("broker.db", _event_log),
                                              (DB_NAME, _integrated)])
def test_a_store_opens_while_another_process_is_still_creating_its_file(
        tmp_path: Path, name: str, opener: Callable[[Path], Callable[[], object]]) -> None:
    data = tmp_path / "data"
    with rival_writer(data / name, 0.3):
        store = opener(data)()  # before: StorageError "database is busy", at once
    store.close()  # type: ignore[attr-defined]
