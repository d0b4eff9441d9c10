"""`audit verify`, part two: the tables reports read are re-derived from the entries.

`audit query`, the console's audit page and the subject report do not scan entries: they
read `audit_index` (seq -> name, recipient, purpose, decision, event type, start time) and
`audit_subject` (pseudonym, seq). The tree proves the entries; it says nothing of these
rows. An insider who can write the database (drop the append-only triggers) could delete
or edit index rows, and every report would lie while the tree still verified. So, once the
entries are proven, one pass decodes each entry, derives its index row and subject keys
exactly as the sequencer did when it appended it, and compares them with the stored rows.
The first difference is named by table and seq, never by a personal value.

`audit verify` does this in its bulk chunks (verify_bulk, with broker.audit.derive_fast:
each entry read once, no fastavro); this module's pass runs where that did not prove the
tables (the exact walk, a difference to name). It too compares a range with derive_fast
first, and only a range that differs is decoded with fastavro to name the difference.
"""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any, Protocol, cast

import fastavro

from broker.audit import derive_fast, verify_bulk
from broker.audit.merkle import TreeBuilder, leaf_hash
from broker.audit.sequencer import subject_keys
from broker.audit.sqlite_store import index_rows_in, subject_rows_in
from broker.audit.store import AuditStore
from broker.audit.subject_report import SECTIONS, lift_of, restricted_by, section_of
from broker.clock import to_millis
from broker.model.codec import MARKER
from broker.model.schemas import Schema

INDEX_COLUMNS = ("seq", "name", "recipient", "purpose", "decision", "event_type",
                 "start_time")
_DERIVED_FROM = {"name", "recipient", "purpose", "decision", "event_type", "start_time",
                 "data_subjects"}
# A subject report's restriction rule reads these too (broker/audit/subject_report.py).
_REPORT_READS = _DERIVED_FROM | {"covenant_version", "detail"}


def _projecting_decoder(schema: Schema, fields: set[str] = _DERIVED_FROM
                        ) -> Callable[[bytes], dict[str, Any]]:
    return _decoder(schema.raw, schema.parsed, len(MARKER) + len(schema.fingerprint), fields)


def _decoder(raw: dict[str, Any], writer: Any, skip: int, fields: set[str] = _DERIVED_FROM
             ) -> Callable[[bytes], dict[str, Any]]:
    """Decode only the fields the tables derive from (Avro resolution skips the rest):
    measured 25% faster than a full decode. The entries are already proven, so the
    header is not checked again."""
    reader = dict(raw)
    reader["fields"] = [f for f in raw["fields"] if f["name"] in fields]
    parsed_reader = fastavro.parse_schema(reader)
    read = fastavro.schemaless_reader

    def decode(data: bytes) -> dict[str, Any]:
        return cast("dict[str, Any]", read(io.BytesIO(data[skip:]), writer, parsed_reader))
    return decode


class DerivedRows(Protocol):
    """A store whose reports read derived tables (the SQLite audit stores)."""

    def audit_entries(self, start: int = 0) -> Iterator[tuple[int, bytes]]: ...

    def index_rows(self) -> Iterator[tuple[Any, ...]]:
        """Every audit_index row, INDEX_COLUMNS, by seq."""
        ...

    def subject_rows(self) -> Iterator[tuple[int, bytes]]:
        """Every audit_subject row as (seq, pseudonym), by seq then pseudonym."""
        ...


def index_row(seq: int, entry: dict[str, Any]) -> tuple[Any, ...]:
    """The audit_index row the sequencer stores for a decoded entry."""
    return (seq, entry["name"], entry.get("recipient"), entry.get("purpose"),
            entry.get("decision"), entry.get("event_type"), to_millis(entry["start_time"]))


def _differs(stored: tuple[Any, ...], derived: tuple[Any, ...]) -> str:
    for column, have, want in zip(INDEX_COLUMNS, stored, derived, strict=True):
        if have != want:
            return f"its {column} is not the entry's"
    return "it differs from the entry"  # pragma: no cover - the tuples differ somewhere


def derived_problem(store: DerivedRows, schema: Schema) -> str | None:
    """The first difference between the derived tables and the (verified) entries.

    On a log file and more than one core, in seq ranges on worker processes (the decode is
    the cost: about 40 us an entry); the first range with a difference names it, so the
    message is the one the single pass would give.
    """
    path = _db_path(store)
    size = _size(store)
    if path is None:
        return _compare(store.audit_entries(0), store.index_rows(), store.subject_rows(),
                        _projecting_decoder(schema))
    bounds = list(range(0, max(size, 1), _RANGE))
    ranges = [(None if i == 0 else a, None if i == len(bounds) - 1 else a + _RANGE)
              for i, a in enumerate(bounds)]
    if verify_bulk.workers() < 2 or len(ranges) == 1:
        for lo, hi in ranges:
            problem = _compare_range(path, schema.raw, len(schema.fingerprint), lo, hi)
            if problem is not None:
                return problem
        return None
    with ProcessPoolExecutor(max_workers=verify_bulk.workers(),
                             mp_context=get_context("fork")) as pool:
        futures = [pool.submit(_compare_range, path, schema.raw, len(schema.fingerprint),
                               lo, hi) for lo, hi in ranges]
        for future in futures:
            problem = future.result()
            if problem is not None:
                for later in futures:
                    later.cancel()
                return problem
    return None


_RANGE = 1 << 15


def _db_path(store: DerivedRows) -> str | None:
    db = getattr(store, "db", None)
    if not isinstance(db, sqlite3.Connection):
        return None
    row = db.execute("PRAGMA database_list").fetchone()
    return str(row[2]) if row and row[2] else None


def _size(store: DerivedRows) -> int:
    audit_size = getattr(store, "audit_size", None)
    return int(audit_size()) if audit_size is not None else 0


def _compare_range(path: str, raw: dict[str, Any], fingerprint_len: int, lo: int | None,
                   hi: int | None) -> str | None:
    """One seq range [lo, hi) (None: unbounded) on a read-only connection of its own."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
    try:
        where = " AND ".join(c for c in (
            "seq >= :lo" if lo is not None else "", "seq < :hi" if hi is not None else "")
            if c) or "1"
        args = {"lo": lo, "hi": hi}
        if _matches_fast(db, raw, len(MARKER) + fingerprint_len, lo, hi):
            return None
        entries = db.execute(f"SELECT seq, entry FROM audit WHERE {where} ORDER BY seq",  # noqa: S608 - fixed clauses
                             args)
        index = db.execute("SELECT seq, name, recipient, purpose, decision, event_type, "  # noqa: S608
                           f"start_time FROM audit_index WHERE {where} ORDER BY seq", args)
        subjects = db.execute(f"SELECT seq, pseudonym FROM audit_subject WHERE {where} "  # noqa: S608
                              "ORDER BY seq, pseudonym", args)
        writer = fastavro.parse_schema(raw)
        return _compare(entries, index, subjects,
                        _decoder(raw, writer, len(MARKER) + fingerprint_len))
    finally:
        db.close()


def _matches_fast(db: sqlite3.Connection, raw: dict[str, Any], skip: int, lo: int | None,
                  hi: int | None) -> bool:
    """The stored rows of seq range [lo, hi) (None: unbounded) are the rows derive_fast
    derives from its entries; False on any doubt (the exact comparison then decides)."""
    derive = derive_fast.deriver(raw, skip)
    if derive is None:
        return False
    where, args = _seq_clause(lo, hi)
    cursor = db.execute(f"SELECT seq, entry FROM audit WHERE {where} ORDER BY seq", args)  # noqa: S608 - fixed clauses
    expected = 0 if lo is None else lo
    while block := cursor.fetchmany(_FAST_BLOCK):
        first, n = block[0][0], len(block)
        if first != expected or block[-1][0] != first + n - 1:  # not contiguous
            return False
        entries = [bytes(data) for _, data in block]
        try:
            index, subjects = derive(entries, first)
        except (IndexError, ValueError, UnicodeDecodeError):
            return False
        if (index_rows_in(db, first, first + n) != index
                or subject_rows_in(db, first, first + n) != subjects):
            return False
        expected = first + n
    if hi is not None and expected != hi:
        return False
    # The first range owns every row before its entries, the last every row after them.
    outside: list[tuple[int | None, int | None]] = [(None, 0)] if lo is None else []
    outside += [(expected, None)] if hi is None else []
    return all(not index_rows_in(db, a, b) and not subject_rows_in(db, a, b)
               for a, b in outside)


def _seq_clause(lo: int | None, hi: int | None) -> tuple[str, tuple[int, ...]]:
    clauses = [c for c, v in (("seq >= ?", lo), ("seq < ?", hi)) if v is not None]
    return " AND ".join(clauses) or "1", tuple(v for v in (lo, hi) if v is not None)


_FAST_BLOCK = 4096


def _compare(entry_rows: Iterator[tuple[int, bytes]], index: Iterator[tuple[Any, ...]],
             subjects: Iterator[tuple[int, bytes]],
             decode: Callable[[bytes], dict[str, Any]]) -> str | None:
    pending_subject = next(subjects, None)
    pending_index = next(index, None)
    for seq, data in entry_rows:
        entry = decode(bytes(data))
        derived = index_row(seq, entry)
        if pending_index is None or pending_index[0] > seq:
            return f"audit_index seq {seq}: the row is missing (the entry exists)"
        if pending_index[0] < seq:
            return (f"audit_index seq {pending_index[0]}: a row for an entry that is not "
                    "in the log")
        stored = tuple(pending_index)
        if stored != derived:
            return f"audit_index seq {seq}: {_differs(stored, derived)}"
        pending_index = next(index, None)
        keys = sorted(subject_keys(entry))
        found: list[bytes] = []
        while pending_subject is not None and pending_subject[0] <= seq:
            if pending_subject[0] < seq:
                return (f"audit_subject seq {pending_subject[0]}: names a data subject the "
                        "entry does not name")
            found.append(bytes(pending_subject[1]))
            pending_subject = next(subjects, None)
        if found != keys:
            missing = len(set(keys) - set(found))
            extra = len(set(found) - set(keys))
            what = (f"{missing} of the entry's data subjects are missing" if missing else
                    f"{extra} data subjects are named that the entry does not name")
            return f"audit_subject seq {seq}: {what}"
    if pending_index is not None:
        return f"audit_index seq {pending_index[0]}: a row for an entry that is not in the log"
    if pending_subject is not None:
        return (f"audit_subject seq {pending_subject[0]}: a row for an entry that is not in "
                "the log")
    return None


def _lifts_up_to(restriction: Any) -> int | None:
    """The log size whose lifts a report applied: 0 when it states no restriction (a
    report from before them), None when the statement is malformed."""
    if restriction is None:
        return 0
    value = restriction.get("lifts_up_to") if isinstance(restriction, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def report_difference(store: AuditStore, schema: Schema, report: dict[str, Any],
                      confidential: frozenset[tuple[str, int]] = frozenset()) -> str | None:
    """Re-derive a subject report's entries from the log up to the checkpoint it states it
    is complete up to, by a scan (never the index), and name the first difference.

    A report that states a restriction is re-derived under the same rule: `confidential`
    (the auditor's own reading of the covenant versions) less the lifts in the log below
    the report's `lifts_up_to`; restricted entries must be absent, or in the FG's view
    present and marked.

    The stated root is compared first, with the root of the log's own entries at that
    size (hashed here, not read from the tree cache): a report complete up to a checkpoint
    of another log, or of this log as it was before an edit, says nothing of this one.
    """
    person = str(report["subject"]["pseudonym"])
    size = int(report["complete_up_to"]["size"])
    stated_root = str(report["complete_up_to"]["root"])
    restriction = report.get("restriction")
    lifts_up_to = _lifts_up_to(restriction)
    if lifts_up_to is None:
        return "the report's restriction states no log size whose lifts it applied"
    if restriction is not None and lifts_up_to < size:
        # Fewer lifts than the report claims to be complete for would hide lifted entries.
        return (f"the report applies the lifts of the first {lifts_up_to} entries only, "
                f"but states it is complete up to {size}")
    revealed = isinstance(restriction, dict) and restriction.get("revealed") is True
    items = [item for section in SECTIONS for item in report.get(section) or []
             if int(item["seq"]) < size]
    stated = {int(item["seq"]): section for section in SECTIONS
              for item in report.get(section) or [] if int(item["seq"]) < size}
    marked = {int(item["seq"]) for item in items if item.get("restricted") is True}
    decode = _projecting_decoder(schema, _REPORT_READS)
    derived: dict[int, str] = {}
    under: dict[int, dict[str, Any]] = {}
    lifts: set[tuple[str, int]] = set()
    tree = TreeBuilder()
    for expected, (seq, data) in enumerate(store.audit_entries(0)):
        if seq >= max(size, lifts_up_to):
            break
        if seq != expected:
            return f"entry {expected}: missing from the log (the next stored is {seq})"
        if seq < size:  # the root the report states is the log's at its size
            tree.append(leaf_hash(data))
        entry = decode(data)
        lift = lift_of(entry) if seq < lifts_up_to else None
        if lift is not None:
            lifts.add(lift)
        if seq < size and any(s["pseudonym"] == person
                              for s in entry.get("data_subjects") or ()):
            derived[seq] = section_of(entry)
            under[seq] = entry
    if tree.size < size:
        return (f"the report is complete up to size {size}, the log holds {tree.size} "
                "entries")
    root = tree.root().hex()
    if stated_root != root:
        return (f"the report states root {stated_root} at size {size}, the log's root at "
                f"that size is {root}")
    restricted = frozenset(confidential - lifts) if isinstance(restriction, dict) else \
        frozenset()
    hidden = {seq for seq, entry in under.items() if restricted_by(entry, restricted)}
    for seq in sorted(hidden | marked):
        if seq not in hidden:
            return f"entry {seq}: marked restricted, but no restriction applies to it"
        if revealed and seq not in marked:
            return f"entry {seq}: restricted, but the FG's view does not mark it"
        if not revealed:
            if seq in stated:
                return f"entry {seq}: a restriction applies to it, yet the report shows it"
            del derived[seq]  # left out by the rule the report states
    for seq in sorted(set(stated) | set(derived)):
        if seq not in stated:
            return f"entry {seq}: names the person, the report leaves it out"
        if seq not in derived:
            return f"entry {seq}: in the report, but the entry does not name the person"
        if stated[seq] != derived[seq]:
            return (f"entry {seq}: the report lists it under {stated[seq]}, the entry is "
                    f"{derived[seq]}")
    return None
