"""The integrated audit log of a Kafka deployment: one SQLite file in the data directory.

The same audit tables as the embedded backend (the `audit` entries plus
broker.audit.sqlite_store's tree, checkpoints and indexes), and one more:

  audit_source  partition -> entries integrated, chain hash of the last one

A batch of integrated entries and the positions they advance are written in one
`BEGIN IMMEDIATE` transaction, so a crash neither skips nor duplicates an entry.

One integrator writes a data directory's integrated log: `lock_writer()` takes an
exclusive `flock` on `audit-kafka.lock` beside the database and keeps it until `close()`.
Readers (the audit commands, the web console) open it without the lock.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from broker.audit.entries import Draft
from broker.audit.integrate import ChainPosition
from broker.audit.sequencer import AuditSequencer
from broker.audit.sqlite_store import SqliteAudit
from broker.audit.sqlite_tx import AUDIT_TABLE, append_only, read_rows, write_transaction
from broker.errors import StorageError
from broker.keys import private_db
from broker.sqlite_wal import open_wal

DB_NAME = "audit-kafka.db"
LOCK_NAME = "audit-kafka.lock"

_SCHEMA = AUDIT_TABLE + append_only("audit") + """
CREATE TABLE IF NOT EXISTS audit_source (
    partition INTEGER PRIMARY KEY,
    entries INTEGER NOT NULL,
    head TEXT NOT NULL,
    next_offset INTEGER NOT NULL
);
"""


class IntegratedAuditDb:
    """The integrated log's store: the audit store port (`.audit`) and source positions."""

    def __init__(self, data_dir: Path, sequencer: AuditSequencer) -> None:
        self.path = data_dir / DB_NAME
        self._lock: int | None = None
        private_db(self.path)  # pseudonyms and decisions: owner only, 0600 from the start
        try:
            self.db = open_wal(self.path, secure_delete=False)
            self.db.executescript(_SCHEMA)
            self.audit = SqliteAudit(self.db, sequencer, self._write, self._read)
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: {exc}") from exc

    def lock_writer(self) -> None:
        """Become the only integrator of this data directory, or refuse (held until close)."""
        if self._lock is not None:
            return
        lock_path = self.path.parent / LOCK_NAME
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StorageError(
                f"{lock_path}: another `audit integrate` holds this data directory's "
                "integrated audit log; run one integrator per data directory") from None
        self._lock = fd

    def close(self) -> None:
        try:
            self.db.close()
        finally:
            if self._lock is not None:
                os.close(self._lock)  # releases the flock
                self._lock = None

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        return write_transaction(self.db, self.path)

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside see one state of the log, whatever the integrator appends meanwhile
        (WAL: the read transaction's snapshot is taken at its first read)."""
        try:
            self.db.execute("BEGIN")
            try:
                yield
            finally:
                self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: {exc}") from exc

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        return read_rows(self.db, self.path, sql, args)

    def positions(self, partitions: int) -> dict[int, ChainPosition]:
        """The stored position of every source partition (nothing integrated: 0, GENESIS)."""
        found = {int(r[0]): ChainPosition(int(r[0]), int(r[1]), str(r[2]), int(r[3]))
                 for r in self._read("SELECT partition, entries, head, next_offset FROM "
                                     "audit_source", ())}
        extra = sorted(set(found) - set(range(partitions)))
        if extra:
            raise StorageError(f"{self.path}: holds entries of audit partitions {extra}, but "
                               f"the deployment has {partitions}; wrong data directory?")
        return {p: found.get(p, ChainPosition(p, 0)) for p in range(partitions)}

    def append(self, batch: Sequence[tuple[list[Draft], ChainPosition]]) -> int:
        """Append each chain's drafts in order and store the positions they reach, as one
        transaction. Returns the number of entries appended."""
        if self._lock is None:
            raise StorageError(f"{self.path}: only the integrator appends (lock_writer first)")
        with self._write() as db:
            drafts = [d for chunk, _ in batch for d in chunk]
            self.audit.append(db, drafts)
            db.executemany("INSERT INTO audit_source (partition, entries, head, next_offset) "
                           "VALUES (?, ?, ?, ?) ON CONFLICT (partition) DO UPDATE SET "
                           "entries = excluded.entries, head = excluded.head, "
                           "next_offset = excluded.next_offset",
                           [(pos.partition, pos.entries, pos.head, pos.next_offset)
                            for _, pos in batch])
        return len(drafts)
