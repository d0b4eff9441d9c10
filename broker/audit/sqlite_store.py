"""The audit log on SQLite: the sequencer's rows, the tree, checkpoints and query indexes.

`SqliteEventLog` owns the connection and the transactions; this class owns the audit
tables beside the `audit` entry table and runs the sequencer (`append`) inside the
caller's `BEGIN IMMEDIATE` transaction, so the chain head, the tree frontier, the entries,
their tree nodes, their index rows and a due checkpoint are read and written as one.

Tables (all append-only, like `audit`):
  audit_node        position -> hash of every complete subtree (broker.audit.tree)
  audit_checkpoint  size -> signed note
  audit_index       seq -> the columns `audit query` filters on
  audit_subject     (subject pseudonym, seq): the subject report's index
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from functools import partial
from operator import itemgetter
from typing import Any

from broker.audit.entries import GENESIS, Draft
from broker.audit.merkle import HASH_SIZE, leaf_hash
from broker.audit.sequencer import AuditSequencer, SealedAudit, subject_keys
from broker.audit.store import QueryFilter, StoredCheckpoint
from broker.audit.tree import Frontier, MissingNodeError, node_count
from broker.clock import to_millis
from broker.errors import StorageError
from broker.logs import get_logger
from broker.model.schemas import Schema

AUDIT_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_node (
    pos INTEGER PRIMARY KEY,
    hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_checkpoint (
    size INTEGER PRIMARY KEY,
    note TEXT NOT NULL,
    signed_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_index (
    seq INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    recipient TEXT,
    purpose TEXT,
    decision TEXT,
    event_type TEXT,
    start_time INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_index_recipient ON audit_index (recipient, seq);
CREATE INDEX IF NOT EXISTS audit_index_purpose ON audit_index (purpose, seq);
CREATE INDEX IF NOT EXISTS audit_index_time ON audit_index (start_time);
-- Every subject report reads the control entries (the confidential lifts, lifted_pairs):
-- without this, a scan of the whole index (50 ms on 1M entries). Partial, so appends of
-- any other entry pay nothing for it.
CREATE INDEX IF NOT EXISTS audit_index_control ON audit_index (seq) WHERE name = 'control';
CREATE TABLE IF NOT EXISTS audit_subject (
    pseudonym BLOB NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (pseudonym, seq)
) WITHOUT ROWID;
-- By seq too: `audit verify` reads the rows of each range of entries it re-derives (a scan
-- of the whole table per range made it quadratic in the size of the log).
CREATE INDEX IF NOT EXISTS audit_subject_seq ON audit_subject (seq);
"""

AUDIT_TABLES = ("audit_node", "audit_checkpoint", "audit_index", "audit_subject")

Writer = Callable[[], AbstractContextManager[sqlite3.Connection]]
Reader = Callable[[str, tuple[Any, ...]], list[Any]]

_STREAM_CHUNK = 10_000
_BLOCK = 4096  # entries per fetch in `audit verify`'s chunks: a few MB at most


def audit_triggers() -> str:
    return "\n".join(
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_{action.lower()} BEFORE {action} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END;"
        for table in AUDIT_TABLES for action in ("UPDATE", "DELETE"))


class SqliteAudit:
    """The audit store port on one SQLite connection, and the sequencer's storage."""

    def __init__(self, db: sqlite3.Connection, sequencer: AuditSequencer, write: Writer,
                 read: Reader) -> None:
        self.db = db
        self.sequencer = sequencer
        self._write = write
        self._read = read
        self._appended = False  # this process wrote entries since its last checkpoint
        # The frontier after this process's last append, under the chain hash of the entry
        # it ends with: that hash fixes every entry before it, so where the log still ends
        # there, the frontier is the stored one, without its popcount(size) node lookups.
        self._tip: tuple[str, Frontier] | None = None
        db.executescript(AUDIT_SCHEMA + audit_triggers())
        self._catch_up()

    # -- the sequencer (inside the caller's write transaction) ------------------------------
    def append(self, db: sqlite3.Connection, drafts: list[Draft]) -> list[SealedAudit]:
        if not drafts:
            return []
        size, prev, frontier = self._head(db)
        sealed = self.sequencer.seal(size, prev, frontier, drafts)
        self._insert(db, sealed)
        self._tip = (sealed[-1].entry_hash, frontier.copy())
        self._appended = sealed[-1].checkpoint is None
        self._maybe_checkpoint(db, frontier, closing=False)
        return sealed

    def _insert(self, db: sqlite3.Connection, sealed: list[SealedAudit]) -> None:
        db.executemany("INSERT INTO audit (seq, entry, entry_hash) VALUES (?, ?, ?)",
                       [(s.seq, s.data, s.entry_hash) for s in sealed])
        # NewNode and IndexRow are tuples: the rows themselves
        db.executemany("INSERT INTO audit_node (pos, hash) VALUES (?, ?)",
                       [n for s in sealed for n in s.nodes])
        db.executemany("INSERT INTO audit_index (seq, name, recipient, purpose, decision, "
                       "event_type, start_time) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       [s.index for s in sealed])
        db.executemany("INSERT INTO audit_subject (pseudonym, seq) VALUES (?, ?)",
                       [(key, s.seq) for s in sealed for key in s.subjects])
        db.executemany("INSERT INTO audit_checkpoint (size, note, signed_ms) VALUES (?, ?, ?)",
                       [(s.checkpoint.size, s.checkpoint.note, s.checkpoint.signed_ms)
                        for s in sealed if s.checkpoint is not None])

    def _maybe_checkpoint(self, db: sqlite3.Connection, frontier: Frontier, *,
                          closing: bool) -> bool:
        last = db.execute("SELECT size, signed_ms FROM audit_checkpoint "
                          "ORDER BY size DESC LIMIT 1").fetchone()
        last_size, last_ms = (int(last[0]), int(last[1])) if last else (0, None)
        if not self.sequencer.checkpoint_due(frontier.size, last_size, last_ms,
                                             closing=closing):
            return False
        cp = self.sequencer.sign(frontier.size, frontier.root())
        db.execute("INSERT INTO audit_checkpoint (size, note, signed_ms) VALUES (?, ?, ?)",
                   (cp.size, cp.note, cp.signed_ms))
        self._appended = False
        return True

    def checkpoint(self, *, only_if_appended: bool = True) -> bool:
        """Sign the current tree unless a checkpoint already covers it (at shutdown).

        By default only when this process appended entries: a reading command never
        signs a log it did not write (it could be signing someone's tampering).
        """
        if self.sequencer.signer is None or (only_if_appended and not self._appended):
            return False
        with self._write() as db:
            return self._maybe_checkpoint(db, self._head(db)[2], closing=True)

    def _head(self, db: sqlite3.Connection) -> tuple[int, str, Frontier]:
        """The log's size, the chain hash of its last entry and its tree frontier."""
        row = db.execute("SELECT seq, entry_hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        size, prev = (int(row[0]) + 1, str(row[1])) if row else (0, GENESIS)
        tip = self._tip
        if tip is not None and tip[0] == prev and tip[1].size == size:
            return size, prev, tip[1].copy()
        return size, prev, self._frontier(db, size)

    def _frontier(self, db: sqlite3.Connection, size: int) -> Frontier:
        try:
            return Frontier.load(self._node_reader(db), size)
        except MissingNodeError as exc:
            raise StorageError(f"the audit tree cache is damaged ({exc}); nothing was "
                               "appended; run `covenant-broker audit verify`") from None

    # -- migration: logs written before the tree and indexes existed ------------------------
    def _catch_up(self) -> None:
        """Derive the tree and index rows of a log written before they existed, once.

        Only a log with entries and no tree or index rows at all is derived; any other
        mismatch is left alone for `audit verify` to report, never silently repaired.
        """
        size = self._size(self.db)
        nodes = self.db.execute("SELECT COUNT(*) FROM audit_node").fetchone()[0]
        indexed = self.db.execute("SELECT COUNT(*) FROM audit_index").fetchone()[0]
        if not size or nodes or indexed:
            return
        with self._write() as db:
            self._derive_tree(db, size)
            self._derive_index(db)
        get_logger().warning("audit tree and indexes derived for an older log", entries=size)

    def _derive_tree(self, db: sqlite3.Connection, size: int) -> None:
        have = int(db.execute("SELECT COALESCE(MAX(pos) + 1, 0) FROM audit_node").fetchone()[0])
        leaves = 0
        while node_count(leaves + 1) <= have:
            leaves += 1
        if node_count(leaves) != have:
            raise MissingNodeError(f"audit_node holds {have} nodes, not a whole number of entries")
        frontier = Frontier.load(self._node_reader(db), leaves)
        for _, data in self._stream(db, "SELECT seq, entry FROM audit WHERE seq >= ? "
                                    "ORDER BY seq", (leaves,)):
            db.executemany("INSERT INTO audit_node (pos, hash) VALUES (?, ?)",
                           [(n.position, n.hash) for n in frontier.push(leaf_hash(data))])
        if frontier.size != size:
            raise MissingNodeError(f"the audit table has gaps: {frontier.size} entries for size "
                              f"{size}")

    def _derive_index(self, db: sqlite3.Connection) -> None:
        schema: Schema = self.sequencer.schema
        start = int(db.execute("SELECT COALESCE(MAX(seq) + 1, 0) FROM audit_index"
                               ).fetchone()[0])
        for seq, data in self._stream(db, "SELECT seq, entry FROM audit WHERE seq >= ? "
                                      "ORDER BY seq", (start,)):
            entry = schema.decode(data)
            start_ms = to_millis(entry["start_time"])
            db.execute("INSERT INTO audit_index (seq, name, recipient, purpose, decision, "
                       "event_type, start_time) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (seq, entry["name"], entry["recipient"], entry["purpose"],
                        entry["decision"], entry["event_type"], start_ms))
            db.executemany("INSERT INTO audit_subject (pseudonym, seq) VALUES (?, ?)",
                           [(key, seq) for key in subject_keys(entry)])

    # -- reading ----------------------------------------------------------------------------
    @staticmethod
    def _size(db: sqlite3.Connection) -> int:
        return int(db.execute("SELECT COALESCE(MAX(seq) + 1, 0) FROM audit").fetchone()[0])

    @staticmethod
    def _node_reader(db: sqlite3.Connection) -> Callable[[int], bytes]:
        def read(position: int) -> bytes:
            row = db.execute("SELECT hash FROM audit_node WHERE pos = ?", (position,)).fetchone()
            if row is None:
                raise MissingNodeError(f"tree node at position {position} is not stored")
            return bytes(row[0])
        return read

    @staticmethod
    def _stream(db: sqlite3.Connection, sql: str, args: tuple[Any, ...]
                ) -> Iterator[tuple[int, bytes]]:
        # A cursor of its own, fetched in chunks: memory stays flat on a large log.
        # Rows come back as (int, bytes) already: INTEGER and BLOB columns.
        cursor = db.execute(sql, args)
        while True:
            rows = cursor.fetchmany(_STREAM_CHUNK)
            if not rows:
                return
            yield from rows

    def audit_size(self) -> int:
        return int(self._read("SELECT COALESCE(MAX(seq) + 1, 0) FROM audit", ())[0][0])

    def audit_entries(self, start: int = 0) -> Iterator[tuple[int, bytes]]:
        return self._stream(self.db, "SELECT seq, entry FROM audit WHERE seq >= ? ORDER BY seq",
                            (start,))

    def audit_entries_at(self, seqs: list[int]) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        for i in range(0, len(seqs), 500):
            chunk = seqs[i:i + 500]
            marks = ",".join("?" * len(chunk))
            out.extend((int(r[0]), bytes(r[1])) for r in self._read(
                f"SELECT seq, entry FROM audit WHERE seq IN ({marks})",  # noqa: S608 - placeholders only
                tuple(chunk)))
        out.sort()
        return out

    def tree_node(self, position: int) -> bytes:
        return self._node_reader(self.db)(position)

    def tree_nodes(self, start: int = 0) -> Iterator[tuple[int, bytes]]:
        return self._stream(self.db, "SELECT pos, hash FROM audit_node WHERE pos >= ? "
                            "ORDER BY pos", (start,))

    def checkpoints(self) -> list[StoredCheckpoint]:
        return [StoredCheckpoint(int(r[0]), str(r[1]), int(r[2])) for r in self._read(
            "SELECT size, note, signed_ms FROM audit_checkpoint ORDER BY size", ())]

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        rows = self._read("SELECT size, note, signed_ms FROM audit_checkpoint "
                          "ORDER BY size DESC LIMIT 1", ())
        return StoredCheckpoint(int(rows[0][0]), str(rows[0][1]), int(rows[0][2])) if rows else None

    def checkpoint_at(self, size: int) -> StoredCheckpoint | None:
        rows = self._read("SELECT size, note, signed_ms FROM audit_checkpoint WHERE size = ?",
                          (size,))
        return StoredCheckpoint(int(rows[0][0]), str(rows[0][1]), int(rows[0][2])) if rows else None

    def query(self, where: QueryFilter, limit: int | None = None
              ) -> Iterator[tuple[int, bytes]]:
        clauses, args = [], []
        # With a time window, lead with the time index: a window is narrow, while one
        # recipient or purpose can cover a large part of the log. The unary + keeps SQLite
        # from choosing an equality index instead (measured: 12 ms against 118 ms for a
        # day of one recipient's releases in a 1M-entry log).
        windowed = where.since_ms is not None or where.until_ms is not None
        for column in ("recipient", "purpose", "decision", "event_type", "name"):
            value = getattr(where, column)
            if value is not None:
                clauses.append(f"{'+' if windowed else ''}i.{column} = ?")
                args.append(value)
        if where.since_ms is not None:
            clauses.append("i.start_time >= ?")
            args.append(where.since_ms)
        if where.until_ms is not None:
            clauses.append("i.start_time < ?")
            args.append(where.until_ms)
        if where.after_seq is not None:
            clauses.append("i.seq > ?")
            args.append(where.after_seq)
        sql = "SELECT a.seq, a.entry FROM audit_index i JOIN audit a ON a.seq = i.seq"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY i.seq"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return self._stream(self.db, sql, tuple(args))

    def chunk_reader(self) -> Callable[[], SqliteChunkReader] | None:
        """Opens read-only connections of their own (for `audit verify`'s workers); None
        for a database without a file."""
        row = self.db.execute("PRAGMA database_list").fetchone()
        return partial(SqliteChunkReader, str(row[2])) if row and row[2] else None

    def subject_seqs(self, pseudonym: bytes) -> list[int]:
        return [int(r[0]) for r in self._read(
            "SELECT seq FROM audit_subject WHERE pseudonym = ? ORDER BY seq", (pseudonym,))]

    # -- the derived tables, for `audit verify` to re-derive (broker.audit.verify_derived) --
    def index_rows(self) -> Iterator[tuple[Any, ...]]:
        return self._stream(self.db, "SELECT seq, name, recipient, purpose, decision, "
                            "event_type, start_time FROM audit_index ORDER BY seq", ())

    def subject_rows(self) -> Iterator[tuple[int, bytes]]:
        return self._stream(self.db, "SELECT seq, pseudonym FROM audit_subject "
                            "ORDER BY seq, pseudonym", ())


class SqliteChunkReader:
    """Stored audit entries and tree nodes by range, on a read-only connection of its own."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)

    def entries(self, start: int, end: int) -> Iterator[list[bytes]]:
        # Only the bytes: seq is the INTEGER PRIMARY KEY (distinct integers, visited in
        # order), so end - start rows in [start, end) are exactly start..end-1.
        cursor = self.db.execute("SELECT entry FROM audit WHERE seq >= ? AND seq < ? "
                                 "ORDER BY seq", (start, end))
        first = itemgetter(0)
        while True:
            rows = cursor.fetchmany(_BLOCK)
            if not rows:
                return
            yield list(map(first, rows))

    def node_hashes(self, start: int, end: int) -> bytes | None:
        # One row for the whole range: the aggregate visits the rowid range in order.
        count, kind, shortest, longest, joined = self.db.execute(
            "SELECT count(*), max(typeof(hash)), min(length(hash)), max(length(hash)), "
            "CAST(group_concat(hash, x'') AS BLOB) FROM audit_node WHERE pos >= ? AND pos < ?",
            (start, end)).fetchone()
        if count != end - start:
            return None
        if count and (kind != "blob" or shortest != HASH_SIZE or longest != HASH_SIZE):
            return None
        return bytes(joined) if count else b""

    def nodes(self, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        cursor = self.db.execute("SELECT pos, hash FROM audit_node WHERE pos >= ? AND pos < ? "
                                 "ORDER BY pos", (start, end))
        while True:
            rows = cursor.fetchmany(_STREAM_CHUNK)
            if not rows:
                return
            yield from rows

    # -- the derived tables by seq range (None: unbounded), for the chunk's re-derivation --
    def index_rows(self, lo: int | None, hi: int | None) -> list[tuple[Any, ...]]:
        return index_rows_in(self.db, lo, hi)

    def subject_rows(self, lo: int | None, hi: int | None) -> list[tuple[Any, ...]]:
        return subject_rows_in(self.db, lo, hi)

    def close(self) -> None:
        self.db.close()


def _seq_range(lo: int | None, hi: int | None) -> tuple[str, tuple[int, ...]]:
    clauses = [c for c, v in (("seq >= ?", lo), ("seq < ?", hi)) if v is not None]
    return " AND ".join(clauses) or "1", tuple(v for v in (lo, hi) if v is not None)


def index_rows_in(db: sqlite3.Connection, lo: int | None, hi: int | None
                  ) -> list[tuple[Any, ...]]:
    """The audit_index rows of seqs [lo, hi) (None: unbounded), by seq."""
    where, args = _seq_range(lo, hi)
    return db.execute("SELECT seq, name, recipient, purpose, decision, event_type, "  # noqa: S608 - fixed clauses
                      f"start_time FROM audit_index WHERE {where} ORDER BY seq",
                      args).fetchall()


def subject_rows_in(db: sqlite3.Connection, lo: int | None, hi: int | None
                    ) -> list[tuple[Any, ...]]:
    """The audit_subject rows of seqs [lo, hi) as (seq, pseudonym), by seq, pseudonym."""
    where, args = _seq_range(lo, hi)
    return db.execute(f"SELECT seq, pseudonym FROM audit_subject WHERE {where} "  # noqa: S608 - fixed clauses
                      "ORDER BY seq, pseudonym", args).fetchall()
