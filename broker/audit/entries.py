"""Audit entries: drafts built by the pipeline, sealed into the hash chain by the sequencer.

A draft is a plain dict of the audit_entry fields except seq, prev_hash and logged_at. The
sequencer of a backend (one SQLite transaction, or one Kafka producer per partition) seals
drafts in order: each entry names the SHA-256 of the previous entry's bytes, and its own
bytes are the Avro single-object encoding of the audit_entry schema.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from broker.model.schemas import Schema

GENESIS = "0" * 64
Draft = dict[str, Any]

_DEFAULTS: dict[str, Any] = {
    "status": "OK",
    "parent_span_id": None,
    "foreign_trace_id": None,
    "foreign_span_id": None,
    "covenant_id": None,
    "covenant_version": None,
    "purpose": None,
    "legal_basis": None,
    "recipient": None,
    "data_subjects": [],
    "decision": None,
    "reason_code": None,
    "reason": None,
    "fields_released": [],
    "fields_withheld": [],
    "policy_hash": None,
    "source": None,
    "event_type": None,
    "event_id": None,
    "event_offset": None,
    "egress_offset": None,
    "delivered_commitment": None,
    "detail": {},
}
_FIELD_NAMES = frozenset(_DEFAULTS)


def new_trace_id() -> str:
    return secrets.token_hex(16)


def new_span_id() -> str:
    return secrets.token_hex(8)


def draft(name: str, *, trace_id: str | None, start_ms: int, end_ms: int | None = None,
          **fields: Any) -> Draft:
    """A draft with LDV defaults; unknown field names are a programming error."""
    if not _FIELD_NAMES.issuperset(fields):
        raise TypeError(f"unknown audit fields: {sorted(set(fields) - _FIELD_NAMES)}")
    out: Draft = dict(_DEFAULTS)
    out.update(fields)
    out["name"] = name
    out["trace_id"] = trace_id or new_trace_id()
    out["span_id"] = new_span_id()
    out["start_time"] = start_ms
    out["end_time"] = end_ms if end_ms is not None else start_ms
    return out


@dataclass(frozen=True)
class SealedEntry:
    seq: int
    data: bytes
    entry_hash: str  # hex SHA-256 of data; the next entry's prev_hash


def seal(schema: Schema, entry: Draft, seq: int, prev_hash: str, logged_ms: int) -> SealedEntry:
    record = dict(entry)
    record["seq"] = seq
    record["prev_hash"] = prev_hash
    record["logged_at"] = logged_ms
    data = schema.encode(record)
    return SealedEntry(seq, data, hashlib.sha256(data).hexdigest())
