"""`audit verify`, part two: the tables reports read are re-derived from the entries.

`audit query`, the console's audit page and the subject report do not scan entries: they
read `audit_index` (seq -> name, recipient, purpose, decision, event type, start time) and
`audit_subject` (pseudonym, seq). The tree proves the entries; it says nothing of these
rows. An insider who can write the database (drop the append-only triggers) could delete
or edit index rows, and every report would lie while the tree still verified. So, once the
entries are proven, one pass decodes each entry, derives its index row and subject keys
exactly as the sequencer did when it appended it, and compares them with the stored rows.
The first difference is named by table and seq, never by a personal value.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from broker.audit.sequencer import subject_keys
from broker.clock import to_millis
from broker.model.schemas import Schema

INDEX_COLUMNS = ("seq", "name", "recipient", "purpose", "decision", "event_type",
                 "start_time")


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
    """The first difference between the derived tables and the (verified) entries."""
    index = store.index_rows()
    subjects = store.subject_rows()
    pending_subject = next(subjects, None)
    pending_index = next(index, None)
    decode = schema.decode
    for seq, data in store.audit_entries(0):
        entry = decode(data)
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
