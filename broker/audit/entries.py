"""Audit entries: drafts built by the pipeline, sealed into the hash chain by the sequencer.

A draft is a read-only mapping of the audit_entry fields except seq, prev_hash and
logged_at, made by `draft` and changed only by the steps that return a new one
(`with_subjects`, and last the backend's `at_offset`), never edited in place. The
sequencer of a backend (one SQLite transaction, or one Kafka producer per partition) seals
drafts in order: each entry's bytes are the Avro single-object encoding of the audit_entry
schema, and its prev_hash names the previous entry's chain hash.

The chain hash of an entry is its RFC 9162 leaf hash, SHA-256(0x00 || entry bytes) in hex
(`chain_hash`): the Merkle tree needs that hash of every entry anyway, so chain and tree
share one SHA-256 per entry. Each entry's bytes hold its prev_hash, so the leaf hash of
entry n covers the whole chain before it, as a plain SHA-256 of the bytes would. The 0x00
prefix changes nothing for the chain: both are SHA-256 of an input fixed by the bytes.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from broker.audit.merkle import leaf_hash
from broker.model.schemas import Schema

GENESIS = "0" * 64
# The LDV processing activity (dpl.core.processing_activity_id) of a decision or tombstone,
# a URI from the covenant, is kept in `detail` under this key rather than in a field of its
# own: a new field changes the audit_entry fingerprint, which every stored entry's header
# carries and the verifiers compare byte for byte, so old logs would stop verifying.
PROCESSING_ACTIVITY = "processing_activity_id"
Draft = Mapping[str, Any]  # read-only: a draft is changed by the steps below, never in place

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
    out: dict[str, Any] = dict(_DEFAULTS)
    out.update(fields)
    out["name"] = name
    out["trace_id"] = trace_id or new_trace_id()
    out["span_id"] = new_span_id()
    out["start_time"] = start_ms
    out["end_time"] = end_ms if end_ms is not None else start_ms
    return out


def with_fields(entry: Draft, **fields: Any) -> Draft:
    """A new draft: `entry` with some fields set (the same names `draft` takes)."""
    if not _FIELD_NAMES.issuperset(fields):
        raise TypeError(f"unknown audit fields: {sorted(set(fields) - _FIELD_NAMES)}")
    return {**entry, **fields}


def with_subjects(entry: Draft, subjects: list[dict[str, str]]) -> Draft:
    """The step that names the persons a draft is about (LDV data_subjects)."""
    return with_fields(entry, data_subjects=subjects)


def at_offset(entry: Draft, egress_offset: int) -> Draft:
    """The last step, the backend's: the stream offset it wrote the release at."""
    return {**entry, "egress_offset": egress_offset}


def chain_hash(data: bytes) -> str:
    """The chain hash of stored entry bytes, the next entry's prev_hash: its leaf hash in hex."""
    return leaf_hash(data).hex()


@dataclass(frozen=True)
class SealedEntry:
    seq: int
    data: bytes
    leaf: bytes  # RFC 9162 leaf hash of data, SHA-256(0x00 || data): the tree's leaf
    entry_hash: str  # leaf in hex: the chain hash, the next entry's prev_hash


def seal(schema: Schema, entry: Draft, seq: int, prev_hash: str, logged_ms: int) -> SealedEntry:
    record = dict(entry)
    record["seq"] = seq
    record["prev_hash"] = prev_hash
    record["logged_at"] = logged_ms
    data = schema.encode(record)
    leaf = leaf_hash(data)
    return SealedEntry(seq, data, leaf, leaf.hex())
