"""The embedded backend: the whole event log in one SQLite database in the data directory.

Every write that carries audit drafts runs in one `BEGIN IMMEDIATE` transaction, which
also serialises the audit sequencer: reading the chain head and appending to it cannot
interleave with another writer. Store, egress and audit rows are immutable (triggers
refuse UPDATE and DELETE).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

from broker.audit.entries import Draft, at_offset
from broker.audit.sequencer import AuditSequencer
from broker.audit.sqlite_store import SqliteAudit
from broker.audit.sqlite_tx import (
    AUDIT_TABLE,
    append_only,
    read_rows,
    translate,
    write_transaction,
)
from broker.errors import StorageError
from broker.keys import private_db
from broker.model.schemas import Schema
from broker.pipeline.port import (
    AuditAppender,
    AuditChain,
    ControlLog,
    DecisionBatch,
    DecisionSink,
    EgressReader,
    EgressRecord,
    NewEgress,
    NewEvent,
    NewRevision,
    Quarantined,
    RevisionLog,
    StoredEvent,
    StoredRevision,
    StoreReader,
    StoreWriter,
    TombstoneWriter,
    check_tombstone_batch,
)
from broker.policy.control import ControlEvent, ThemeSwitch
from broker.sqlite_wal import open_wal

_SCHEMA = """
CREATE TABLE IF NOT EXISTS store (
    store_offset INTEGER PRIMARY KEY,
    event_type TEXT NOT NULL,
    source TEXT NOT NULL,
    event_id TEXT NOT NULL,
    payload BLOB NOT NULL,
    trace_id TEXT NOT NULL,
    foreign_trace TEXT,
    ingested_ms INTEGER NOT NULL,
    UNIQUE (event_type, event_id)
);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    declared_type TEXT NOT NULL,
    position TEXT NOT NULL,
    reason_code TEXT NOT NULL,
    reason TEXT NOT NULL,
    raw BLOB NOT NULL,
    received_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS egress (
    recipient TEXT NOT NULL,
    purpose TEXT NOT NULL,
    egress_offset INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('record', 'tombstone')),
    payload BLOB NOT NULL,
    event_offset INTEGER NOT NULL,
    ref TEXT,
    expires_on TEXT,
    released_ms INTEGER NOT NULL,
    tombstone_for INTEGER,
    traceparent TEXT,
    PRIMARY KEY (recipient, purpose, egress_offset)
);
CREATE UNIQUE INDEX IF NOT EXISTS egress_one_tombstone
    ON egress (recipient, purpose, tombstone_for) WHERE tombstone_for IS NOT NULL;
CREATE INDEX IF NOT EXISTS egress_expiring
    ON egress (expires_on) WHERE expires_on IS NOT NULL;
CREATE TABLE IF NOT EXISTS positions (
    consumer TEXT PRIMARY KEY,
    position INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS control (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    effective_ms INTEGER NOT NULL,
    recorded_ms INTEGER NOT NULL
);
"""

_SCHEMA += """
CREATE TABLE IF NOT EXISTS documents (
    sha256 TEXT PRIMARY KEY,
    body BLOB NOT NULL
);
"""

# Corrections and withdrawals (broker/pipeline/corrections.py): a table of their own, added
# to existing data dirs by CREATE IF NOT EXISTS, since the store's UNIQUE (event_type,
# event_id) keeps one row per event and is never rebuilt.
_SCHEMA += """
CREATE TABLE IF NOT EXISTS revisions (
    seq INTEGER PRIMARY KEY,
    action TEXT NOT NULL CHECK (action IN ('correction', 'withdrawal')),
    event_type TEXT NOT NULL,
    source TEXT NOT NULL,
    event_id TEXT NOT NULL,
    original_offset INTEGER NOT NULL,
    payload BLOB NOT NULL,
    reason TEXT NOT NULL,
    digest TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    ingested_ms INTEGER NOT NULL,
    after_store_offset INTEGER NOT NULL,
    foreign_trace TEXT
);
CREATE INDEX IF NOT EXISTS revisions_of_event ON revisions (event_type, event_id, seq);
CREATE INDEX IF NOT EXISTS egress_of_event ON egress (event_type, event_offset);
"""

_IMMUTABLE = ("store", "egress", "audit", "control", "documents", "revisions")


class SqliteEventLog(StoreWriter, StoreReader, DecisionSink, TombstoneWriter, EgressReader,
                     ControlLog, AuditAppender, AuditChain, RevisionLog):
    """The whole port on SQLite, the synchronous pipeline included. One instance per
    process; writers in other processes serialise."""

    def __init__(self, path: Path, audit_schema: Schema,
                 sequencer: AuditSequencer | None = None) -> None:
        self.path = path
        self.audit_schema = audit_schema
        private_db(path)  # the store holds personal data: owner only, 0600 from the start
        try:
            self.db = open_wal(path, secure_delete=True)
            self.db.executescript(AUDIT_TABLE + _SCHEMA + append_only(*_IMMUTABLE))
            _add_column(self.db, "egress", "traceparent")
            _add_column(self.db, "revisions", "foreign_trace")
            # The audit tree, checkpoints and query indexes (broker.audit.sqlite_store).
            self.audit = SqliteAudit(
                self.db, sequencer or AuditSequencer(audit_schema, origin="covenant-broker"),
                self._write, self._read)
        except sqlite3.Error as exc:
            raise translate(exc, path) from exc

    def close(self) -> None:
        try:
            self.audit.checkpoint()  # sign what this process appended, at shutdown
        finally:
            self.db.close()

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        return write_transaction(self.db, self.path)

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        return read_rows(self.db, self.path, sql, args)

    # -- audit sequencer (call only inside _write) -----------------------------------------
    def _append_audit(self, db: sqlite3.Connection, drafts: list[Draft]) -> None:
        self.audit.append(db, drafts)  # chain, tree nodes, indexes, a due checkpoint

    def append_audit(self, audits: list[Draft], now_ms: int) -> None:
        with self._write() as db:
            self._append_audit(db, audits)

    def audit_rows(self) -> Iterator[tuple[int, bytes]]:
        cursor = self.db.execute("SELECT seq, entry FROM audit ORDER BY seq")
        while True:
            rows = cursor.fetchmany(10_000)
            if not rows:
                return
            yield from ((int(r[0]), bytes(r[1])) for r in rows)

    def audit_entries(self) -> Iterator[bytes]:
        return (entry for _, entry in self.audit_rows())

    # -- ingest ----------------------------------------------------------------------------
    def duplicate_ids(self, event_type: str, event_ids: list[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(event_ids), 500):
            chunk = event_ids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in self._read(
                f"SELECT event_id FROM store WHERE event_type = ? AND event_id IN ({marks})",  # noqa: S608 - placeholders only
                (event_type, *chunk)))
        return found

    def append_ingest(self, events: list[NewEvent], quarantined: list[Quarantined],
                      audits: list[Draft], now_ms: int) -> list[StoredEvent]:
        stored: list[StoredEvent] = []
        with self._write() as db:
            row = db.execute("SELECT MAX(store_offset) FROM store").fetchone()
            offset = -1 if row[0] is None else int(row[0])
            for ev in events:
                offset += 1
                stored.append(StoredEvent(offset, ev.event_type, ev.source, ev.event_id,
                                          ev.payload, ev.trace_id, now_ms, ev.foreign_trace,
                                          ev.fresh))
            db.executemany(
                "INSERT INTO store (store_offset, event_type, source, event_id, payload, "
                "trace_id, foreign_trace, ingested_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(s.offset, s.event_type, s.source, s.event_id, s.payload, s.trace_id,
                  s.foreign_trace, now_ms) for s in stored])
            self._insert_quarantine(db, quarantined)
            self._append_audit(db, audits)
        return stored

    @staticmethod
    def _insert_quarantine(db: sqlite3.Connection, quarantined: list[Quarantined]) -> None:
        db.executemany(
            "INSERT INTO quarantine (source, declared_type, position, reason_code, reason, "
            "raw, received_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(q.source, q.declared_type, q.position, q.reason_code, q.reason, q.raw,
              q.received_ms) for q in quarantined])

    def quarantine_count(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM quarantine")[0][0])

    def read_store(self, after: int, limit: int) -> list[StoredEvent]:
        rows = self._read(
            "SELECT store_offset, event_type, source, event_id, payload, trace_id, "
            "ingested_ms, foreign_trace FROM store WHERE store_offset > ? "
            "ORDER BY store_offset LIMIT ?", (after, limit))
        return [StoredEvent(r[0], r[1], r[2], r[3], bytes(r[4]), r[5], r[6], r[7])
                for r in rows]

    # -- corrections and withdrawals -------------------------------------------------------
    _REVISION_COLS = ("seq, action, event_type, source, event_id, original_offset, payload, "
                      "reason, digest, trace_id, ingested_ms, after_store_offset, "
                      "foreign_trace")

    def append_revisions(self, revisions: list[NewRevision], quarantined: list[Quarantined],
                         audits: list[Draft], now_ms: int) -> list[StoredRevision]:
        out: list[StoredRevision] = []
        with self._write() as db:
            row = db.execute("SELECT MAX(seq) FROM revisions").fetchone()
            seq = -1 if row[0] is None else int(row[0])
            row = db.execute("SELECT MAX(store_offset) FROM store").fetchone()
            after = -1 if row[0] is None else int(row[0])
            for r in revisions:
                seq += 1
                out.append(StoredRevision(seq, r.action, r.event_type, r.source, r.event_id,
                                          r.original_offset, r.payload, r.reason, r.digest,
                                          r.trace_id, now_ms, after, r.foreign_trace))
            db.executemany(
                f"INSERT INTO revisions ({self._REVISION_COLS}) "  # noqa: S608 - constant columns
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(s.seq, s.action, s.event_type, s.source, s.event_id, s.original_offset,
                  s.payload, s.reason, s.digest, s.trace_id, s.ingested_ms,
                  s.after_store_offset, s.foreign_trace) for s in out])
            self._insert_quarantine(db, quarantined)
            self._append_audit(db, audits)
        return out

    def read_revisions(self, after: int, limit: int) -> list[StoredRevision]:
        return [_row_to_revision(r) for r in self._read(
            f"SELECT {self._REVISION_COLS} FROM revisions WHERE seq > ? "  # noqa: S608 - constant columns
            "ORDER BY seq LIMIT ?", (after, limit))]

    def revisions_of(self, event_type: str, event_ids: list[str]) -> list[StoredRevision]:
        out: list[StoredRevision] = []
        for i in range(0, len(event_ids), 500):
            chunk = event_ids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            out.extend(_row_to_revision(r) for r in self._read(
                f"SELECT {self._REVISION_COLS} FROM revisions WHERE event_type = ? "  # noqa: S608 - placeholders only
                f"AND event_id IN ({marks}) ORDER BY seq", (event_type, *chunk)))
        return sorted(out, key=lambda r: r.seq)

    def originals(self, event_type: str, event_ids: list[str]) -> dict[str, StoredEvent]:
        out: dict[str, StoredEvent] = {}
        for i in range(0, len(event_ids), 500):
            chunk = event_ids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for r in self._read(
                    "SELECT store_offset, event_type, source, event_id, payload, trace_id, "  # noqa: S608 - placeholders only
                    f"ingested_ms, foreign_trace FROM store WHERE event_type = ? "
                    f"AND event_id IN ({marks})", (event_type, *chunk)):
                out[r[3]] = StoredEvent(r[0], r[1], r[2], r[3], bytes(r[4]), r[5], r[6], r[7])
        return out

    def live_records(self, event_type: str, event_offset: int) -> list[EgressRecord]:
        return [_row_to_egress(r) for r in self._read(
            f"SELECT {self._EGRESS_COLS} FROM egress e WHERE event_type = ? "  # noqa: S608 - constant columns
            "AND event_offset = ? AND kind = 'record' AND NOT EXISTS ("
            "SELECT 1 FROM egress t WHERE t.recipient = e.recipient "
            "AND t.purpose = e.purpose AND t.tombstone_for = e.egress_offset) "
            "ORDER BY recipient, purpose, egress_offset", (event_type, event_offset))]

    # -- decide ----------------------------------------------------------------------------
    def position(self, consumer: str) -> int:
        rows = self._read("SELECT position FROM positions WHERE consumer = ?", (consumer,))
        return int(rows[0][0]) if rows else -1

    def commit_decisions(self, batch: DecisionBatch, now_ms: int) -> list[EgressRecord]:
        written: list[EgressRecord] = []
        with self._write() as db:
            current = db.execute("SELECT position FROM positions WHERE consumer = ?",
                                 (batch.consumer,)).fetchone()
            if current is not None and current[0] >= batch.position and batch.position >= 0:
                raise StorageError(f"consumer {batch.consumer} already committed position "
                                   f"{current[0]}; refusing to decide offset "
                                   f"{batch.position} twice")
            next_offsets: dict[tuple[str, str], int] = {}
            drafts: list[Draft] = []
            rows = []
            for eg in batch.egress:
                key = (eg.recipient, eg.purpose)
                if key not in next_offsets:
                    row = db.execute("SELECT MAX(egress_offset) FROM egress WHERE recipient = ? "
                                     "AND purpose = ?", key).fetchone()
                    next_offsets[key] = 0 if row[0] is None else int(row[0]) + 1
                offset = next_offsets[key]
                next_offsets[key] = offset + 1
                rows.append((eg.recipient, eg.purpose, offset, eg.event_type, eg.kind,
                             eg.sealed_payload or eg.payload, eg.event_offset, eg.ref,
                             eg.expires_on.isoformat() if eg.expires_on else None,
                             eg.released_ms, eg.tombstone_for, eg.traceparent))
                drafts.append(at_offset(eg.audit, offset))
                written.append(_egress_record(eg, offset))
            db.executemany(
                "INSERT INTO egress (recipient, purpose, egress_offset, event_type, kind, "
                "payload, event_offset, ref, expires_on, released_ms, tombstone_for, "
                "traceparent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            drafts.extend(batch.audits)
            self._append_audit(db, drafts)
            if batch.position >= 0:
                db.execute("INSERT INTO positions (consumer, position) VALUES (?, ?) "
                           "ON CONFLICT (consumer) DO UPDATE SET position = excluded.position",
                           (batch.consumer, batch.position))
        return written

    def write_tombstones(self, batch: DecisionBatch, now_ms: int) -> list[EgressRecord]:
        check_tombstone_batch(batch)
        return self.commit_decisions(batch, now_ms)

    # -- egress ----------------------------------------------------------------------------
    _EGRESS_COLS = ("recipient, purpose, egress_offset, event_type, kind, payload, "
                    "event_offset, ref, expires_on, released_ms, traceparent")

    def read_egress(self, recipient: str, purpose: str | None,
                    from_offset: int) -> list[EgressRecord]:
        sql = f"SELECT {self._EGRESS_COLS} FROM egress WHERE recipient = ? AND egress_offset >= ?"  # noqa: S608 - constant columns
        args: tuple[Any, ...] = (recipient, from_offset)
        if purpose is not None:
            sql += " AND purpose = ?"
            args = (*args, purpose)
        sql += " ORDER BY purpose, egress_offset"
        return [_row_to_egress(r) for r in self._read(sql, args)]

    def streams(self, recipient: str) -> list[str]:
        return [r[0] for r in self._read(
            "SELECT DISTINCT purpose FROM egress WHERE recipient = ? ORDER BY purpose",
            (recipient,))]

    def expiring(self, before: date) -> list[EgressRecord]:
        rows = self._read(
            f"SELECT {self._EGRESS_COLS} FROM egress e WHERE kind = 'record' "  # noqa: S608 - constant columns
            "AND expires_on IS NOT NULL AND expires_on < ? AND NOT EXISTS ("
            "SELECT 1 FROM egress t WHERE t.recipient = e.recipient AND t.purpose = e.purpose "
            "AND t.tombstone_for = e.egress_offset) ORDER BY recipient, purpose, egress_offset",
            (before.isoformat(),))
        return [_row_to_egress(r) for r in rows]

    def without_tombstone(self, released: list[tuple[str, str, int]]
                          ) -> list[EgressRecord]:
        out: list[EgressRecord] = []
        for recipient, purpose, offset in released:
            rows = self._read(
                f"SELECT {self._EGRESS_COLS} FROM egress e WHERE recipient = ? "  # noqa: S608 - constant columns
                "AND purpose = ? AND egress_offset = ? AND kind = 'record' AND NOT EXISTS ("
                "SELECT 1 FROM egress t WHERE t.recipient = e.recipient "
                "AND t.purpose = e.purpose AND t.tombstone_for = e.egress_offset)",
                (recipient, purpose, offset))
            out.extend(_row_to_egress(r) for r in rows)
        return out

    # -- control ---------------------------------------------------------------------------
    def append_theme_switch(self, theme: str, on: bool, effective_ms: int,
                            audit: Draft, now_ms: int) -> ThemeSwitch:
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO control (kind, name, value, effective_ms, recorded_ms) "
                "VALUES ('theme', ?, ?, ?, ?)", (theme, "on" if on else "off", effective_ms,
                                                 now_ms))
            seq = int(cur.lastrowid or 0)
            self._append_audit(db, [audit])
        return ThemeSwitch(theme, on, effective_ms, seq)

    def append_control(self, event: ControlEvent, audit: Draft,
                       document: bytes | None = None) -> ControlEvent:
        """A control event (covenant activation, key rotation) with its audit entry."""
        with self._write() as db:
            if document is not None:
                db.execute("INSERT OR IGNORE INTO documents (sha256, body) VALUES (?, ?)",
                           (hashlib.sha256(document).hexdigest(), document))
            cur = db.execute(
                "INSERT INTO control (kind, name, value, effective_ms, recorded_ms) "
                "VALUES (?, ?, ?, ?, ?)", (event.kind, event.name, event.value,
                                          event.effective_ms, event.recorded_ms))
            self._append_audit(db, [audit])
        return replace(event, seq=int(cur.lastrowid or 0))

    def control_events(self) -> list[ControlEvent]:
        return [ControlEvent(r[0], r[1], r[2], int(r[3]), int(r[4]), int(r[5]))
                for r in self._read("SELECT kind, name, value, effective_ms, recorded_ms, seq "
                                    "FROM control ORDER BY seq")]

    def document(self, sha256: str) -> bytes | None:
        rows = self._read("SELECT body FROM documents WHERE sha256 = ?", (sha256,))
        return bytes(rows[0][0]) if rows else None

    def theme_switches(self) -> list[ThemeSwitch]:
        return [ThemeSwitch(r[0], r[1] == "on", int(r[2]), int(r[3])) for r in self._read(
            "SELECT name, value, effective_ms, seq FROM control WHERE kind = 'theme' "
            "ORDER BY seq")]


def _egress_record(eg: NewEgress, offset: int) -> EgressRecord:
    return EgressRecord(eg.recipient, eg.purpose, offset, eg.event_type, eg.kind, eg.payload,
                        eg.event_offset, eg.ref, eg.expires_on, eg.released_ms, eg.traceparent)


def _row_to_revision(r: Any) -> StoredRevision:
    return StoredRevision(int(r[0]), r[1], r[2], r[3], r[4], int(r[5]), bytes(r[6]), r[7],
                          r[8], r[9], int(r[10]), int(r[11]), r[12])


def _row_to_egress(r: Any) -> EgressRecord:
    return EgressRecord(r[0], r[1], int(r[2]), r[3], r[4], bytes(r[5]), int(r[6]), r[7],
                        date.fromisoformat(r[8]) if r[8] else None, int(r[9]), r[10])


def _add_column(db: sqlite3.Connection, table: str, column: str) -> None:
    """A data dir made before egress records (or revisions) carried trace context gets the
    TEXT column (its older rows have none); adding a column is no UPDATE, so the
    append-only triggers stand."""
    columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    if column not in columns:
        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT")
