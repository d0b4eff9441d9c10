"""Egress records on Kafka: one single-partition topic per (recipient, purpose).

The value is the Avro single-object encoding of the view (or of records.tombstone); the
key is the record's opaque reference (``ref``) when the view has one, else empty. The
stream offset is the Kafka offset. Headers carry what the broker needs to render and
expire the record; none holds personal data:

``kind`` (record | tombstone), ``event_type``, ``event_offset`` (the event's store position),
``released_ms``, and when present ``ref``, ``expires_on`` (YYYY-MM-DD, the last day the basis
holds) and ``tombstone_for`` (offset of the released record a tombstone ends).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from broker.backends.kafka.io import Header, header, headers
from broker.errors import StorageError
from broker.pipeline.port import EgressRecord, NewEgress


def egress_headers(eg: NewEgress) -> list[Header]:
    return headers(kind=eg.kind, event_type=eg.event_type, event_offset=eg.event_offset,
                   released_ms=eg.released_ms, ref=eg.ref,
                   expires_on=eg.expires_on.isoformat() if eg.expires_on else None,
                   tombstone_for=eg.tombstone_for, traceparent=eg.traceparent)


def egress_key(eg: NewEgress) -> bytes | None:
    return eg.ref.encode("ascii") if eg.ref else None


def to_egress_record(record: Any, recipient: str, purpose: str) -> EgressRecord:
    try:
        kind = header(record, "kind") or "record"
        event_type = header(record, "event_type") or ""
        expires = header(record, "expires_on")
        return EgressRecord(recipient, purpose, int(record.offset), event_type, kind,
                            bytes(record.value), int(header(record, "event_offset") or -1),
                            header(record, "ref"),
                            date.fromisoformat(expires) if expires else None,
                            int(header(record, "released_ms") or 0))
    except ValueError as exc:
        raise StorageError(f"egress {recipient}/{purpose} offset {record.offset}: malformed "
                           f"headers ({exc})") from None


def tombstone_for(record: Any) -> int | None:
    value = header(record, "tombstone_for")
    return int(value) if value is not None else None
