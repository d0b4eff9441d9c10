"""Audit entries: drafts built by the pipeline, sealed into the hash chain by the sequencer.

A draft is a read-only TypedDict of the audit_entry fields except seq, prev_hash and
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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypedDict, cast

from typing_extensions import ReadOnly, Unpack

from broker.audit.merkle import leaf_hash
from broker.model import codec
from broker.model.avro_writer import compile_writer, zigzag
from broker.model.schemas import Schema

GENESIS = "0" * 64


class DataSubject(TypedDict):
    """One person a draft is about: a keyed pseudonym, never the identifier (LDV)."""

    pseudonym: str
    id_type: str
    role: str


class DraftFields(TypedDict, total=False):
    """The audit_entry fields a step may set: every field but seq, prev_hash, logged_at
    (the sequencer's) and the span identity `draft` makes."""

    status: str
    parent_span_id: str | None
    foreign_trace_id: str | None
    foreign_span_id: str | None
    covenant_id: str | None
    covenant_version: int | None
    purpose: str | None
    legal_basis: str | None
    recipient: str | None
    data_subjects: list[DataSubject] | list[dict[str, str]]
    decision: str | None
    reason_code: str | None
    reason: str | None
    fields_released: list[str]
    fields_withheld: list[str]
    policy_hash: str | None
    source: str | None
    event_type: str | None
    event_id: str | None
    event_offset: int | None
    egress_offset: int | None
    delivered_commitment: str | None
    detail: dict[str, str]


class Draft(TypedDict):
    """A draft audit entry, read-only: changed by the steps below, which return a new one.
    Every audit_entry field but seq, prev_hash and logged_at (the sequencer's)."""

    name: ReadOnly[str]
    status: ReadOnly[str]
    trace_id: ReadOnly[str]
    span_id: ReadOnly[str]
    parent_span_id: ReadOnly[str | None]
    foreign_trace_id: ReadOnly[str | None]
    foreign_span_id: ReadOnly[str | None]
    start_time: ReadOnly[int]
    end_time: ReadOnly[int]
    covenant_id: ReadOnly[str | None]
    covenant_version: ReadOnly[int | None]
    purpose: ReadOnly[str | None]
    legal_basis: ReadOnly[str | None]
    recipient: ReadOnly[str | None]
    data_subjects: ReadOnly[list[DataSubject] | list[dict[str, str]]]
    decision: ReadOnly[str | None]
    reason_code: ReadOnly[str | None]
    reason: ReadOnly[str | None]
    fields_released: ReadOnly[list[str]]
    fields_withheld: ReadOnly[list[str]]
    policy_hash: ReadOnly[str | None]
    source: ReadOnly[str | None]
    event_type: ReadOnly[str | None]
    event_id: ReadOnly[str | None]
    event_offset: ReadOnly[int | None]
    egress_offset: ReadOnly[int | None]
    delivered_commitment: ReadOnly[str | None]
    detail: ReadOnly[dict[str, str]]

# The LDV processing activity (dpl.core.processing_activity_id) of a decision or tombstone,
# a URI from the covenant, is kept in `detail` under this key rather than in a field of its
# own: a new field changes the audit_entry fingerprint, which every stored entry's header
# carries and the verifiers compare byte for byte, so old logs would stop verifying.
PROCESSING_ACTIVITY = "processing_activity_id"


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
          span_id: str | None = None, **fields: Unpack[DraftFields]) -> Draft:
    """A draft with LDV defaults; unknown field names are a programming error. `span_id`:
    a span made before the entry (a request's, whose traceparent the answer carries)."""
    if not _FIELD_NAMES.issuperset(fields):
        raise TypeError(f"unknown audit fields: {sorted(set(fields) - _FIELD_NAMES)}")
    out: dict[str, Any] = dict(_DEFAULTS)
    out.update(fields)
    out["name"] = name
    out["trace_id"] = trace_id or new_trace_id()
    out["span_id"] = span_id or new_span_id()
    out["start_time"] = start_ms
    out["end_time"] = end_ms if end_ms is not None else start_ms
    return cast(Draft, out)


def with_fields(entry: Draft, **fields: Unpack[DraftFields]) -> Draft:
    """A new draft: `entry` with some fields set (the same names `draft` takes)."""
    if not _FIELD_NAMES.issuperset(fields):
        raise TypeError(f"unknown audit fields: {sorted(set(fields) - _FIELD_NAMES)}")
    return cast(Draft, {**entry, **fields})


def with_subjects(entry: Draft, subjects: list[DataSubject] | list[dict[str, str]]) -> Draft:
    """The step that names the persons a draft is about (LDV data_subjects)."""
    return with_fields(entry, data_subjects=subjects)


def at_offset(entry: Draft, egress_offset: int) -> Draft:
    """The last step, the backend's: the stream offset it wrote the release at."""
    return cast(Draft, {**entry, "egress_offset": egress_offset})


def chain_hash(data: bytes) -> str:
    """The chain hash of stored entry bytes, the next entry's prev_hash: its leaf hash in hex."""
    return leaf_hash(data).hex()


@dataclass(slots=True)  # not frozen: read-only by contract, and five times cheaper to make
class SealedEntry:
    seq: int
    data: bytes
    leaf: bytes  # RFC 9162 leaf hash of data, SHA-256(0x00 || data): the tree's leaf
    entry_hash: str  # leaf in hex: the chain hash, the next entry's prev_hash


def seal(schema: Schema, entry: Draft, seq: int, prev_hash: str, logged_ms: int) -> SealedEntry:
    data = entry_writer(schema)(entry, seq, prev_hash, logged_ms)
    leaf = leaf_hash(data)
    return SealedEntry(seq, data, leaf, leaf.hex())


_HEAD = ("seq", "prev_hash", "logged_at")  # the sequencer's, first in the schema
_HASH_PREFIX = zigzag(64)  # the length of a hex chain hash

EntryEncoder = Callable[[Draft, int, str, int], bytes]
_writers: dict[int, tuple[Schema, EntryEncoder]] = {}


def entry_writer(schema: Schema) -> EntryEncoder:
    """`write(draft, seq, prev_hash, logged_ms)`: the entry's bytes, `schema.encode` of the
    draft with the three fields set, without copying the draft: the header is written here
    and the rest by a writer of the fields after it. Anything
    outside that fast path is `schema.encode` of the copy, so the bytes are the same."""
    found = _writers.get(id(schema))
    if found is not None and found[0] is schema:
        return found[1]
    fields = schema.parsed["fields"]
    if tuple(f["name"] for f in fields[:3]) != _HEAD:
        raise ValueError(f"{schema.name} does not start with {_HEAD}")
    body = compile_writer({**schema.parsed, "fields": fields[3:]}, cache_strings=True)
    prefix = codec.MARKER + schema.fingerprint
    logged: list[tuple[int, bytes]] = [(0, zigzag(0))]  # one instant for a whole batch

    def write(entry: Draft, seq: int, prev_hash: str, logged_ms: int) -> bytes:
        if type(seq) is int and type(prev_hash) is str and len(prev_hash) == 64 and \
                type(logged_ms) is int and 0 <= seq < 1 << 63 and \
                -(1 << 63) <= logged_ms < 1 << 63 and prev_hash.isascii():
            last = logged[0]
            if last[0] != logged_ms:
                last = logged[0] = (logged_ms, zigzag(logged_ms))
            out = [prefix, zigzag(seq), _HASH_PREFIX, prev_hash.encode(), last[1]]
            try:
                body(entry, out)
            except Exception:  # noqa: BLE001, S110 - outside the fast path: schema.encode decides
                pass
            else:
                return b"".join(out)
        record = dict(entry)
        record["seq"] = seq
        record["prev_hash"] = prev_hash
        record["logged_at"] = logged_ms
        return schema.encode(record)

    _writers[id(schema)] = (schema, write)
    return write
