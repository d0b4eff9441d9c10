"""Egress records on Kafka: one single-partition, compacted topic per (recipient, purpose).

What a recipient's own Kafka client sees (docs/kafka-retention.md):

- key: the record's ``ref``, its purpose's keyed pseudonym of the event id (every view
  has one, broker/policy/views.py); a tombstone has the key of the record it ends;
- value: the released view in Avro single-object encoding with the view's own schema
  (schemas/views/), or null for a tombstone (expiry or erasure), which compaction uses to
  remove the record it ends;
- headers: ``view`` (the view's Avro full name), ``kind`` (record | tombstone),
  ``released_ms``, ``expires_on`` (YYYY-MM-DD, this purpose's last day of the record's
  basis) on records that expire, ``cause`` (expired | erased) on tombstones, and
  ``broker_link``.

Nothing there names the event's store position, another purpose's refs, a key id or a
retention date: the same event on three streams has three unrelated keys. What the broker
itself needs to get back from an egress record (the store position, for the audit's
data-subject look-ups of consume, expiry and erasure; the event type; for a tombstone the
offset it ends and the records.tombstone payload consume renders) travels in
``broker_link``: AES-256-GCM under the broker's ``egress-link`` key with a random nonce per
record, bound to the topic, and padded to a fixed size. A recipient sees random bytes that
differ for every record, so they link nothing. Kept in the record rather than in an index
topic or the audit log, the link costs no extra record in the pipeline's transaction
(~28 us each), needs no scan of the audit partitions per consume, and lives and dies with
the record under retention and compaction.
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass
from datetime import date
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.backends.kafka.io import Header, header, header_bytes, headers
from broker.errors import StorageError
from broker.pipeline.port import EgressRecord, NewEgress

LINK_HEADER = "broker_link"
LINK_KEY = "egress-link"  # KeyStore.secret name
_NONCE = 12
_PAD = 64  # plaintext padded to a multiple of this: the length tells no offset's size
_AD = b"covenant-broker egress link v1|"
# records.tombstone's cause -> the header a recipient reads (later: withdrawn, rectified)
CAUSES = {"expired": "expired", "erasure": "erased", "rectified": "rectified",
          "withdrawn": "withdrawn"}


@dataclass(frozen=True)
class Link:
    """What the broker keeps about an egress record, sealed in its `broker_link` header."""

    event_offset: int
    event_type: str
    tombstone_for: int | None = None
    tombstone: bytes | None = None  # the records.tombstone payload (single-object encoded)


class EgressLink:
    """Seals and opens `broker_link` headers under one 32-byte key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError(f"the egress link key has {len(key)} bytes, not 32")
        self._aead = AESGCM(key)

    def seal(self, topic: str, link: Link) -> bytes:
        body: dict[str, Any] = {"o": link.event_offset, "t": link.event_type}
        if link.tombstone_for is not None:
            body["f"] = link.tombstone_for
        if link.tombstone is not None:
            body["p"] = base64.b64encode(link.tombstone).decode("ascii")
        text = json.dumps(body, separators=(",", ":")).encode()
        text += b" " * (-len(text) % _PAD)  # JSON ignores trailing blanks
        nonce = secrets.token_bytes(_NONCE)
        return nonce + self._aead.encrypt(nonce, text, _AD + topic.encode())

    def open(self, topic: str, sealed: bytes) -> Link:
        """The link of a record on `topic`; StorageError if it is not one this key sealed
        for that topic (another deployment's key, a copied record, a damaged header)."""
        try:
            text = self._aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], _AD + topic.encode())
            body = json.loads(text)
            tombstone = body.get("p")
            return Link(int(body["o"]), str(body["t"]),
                        int(body["f"]) if body.get("f") is not None else None,
                        base64.b64decode(tombstone) if tombstone is not None else None)
        except (InvalidTag, ValueError, KeyError, TypeError):
            raise StorageError(
                f"egress topic {topic}: a {LINK_HEADER} header that does not open under this "
                "data dir's egress-link key (keys/egress-link.key); restore that key from "
                "the backup of the data dir that wrote the topic") from None


def cause_of(eg: NewEgress) -> str | None:
    """The tombstone's cause as its header says it (the audit draft's detail holds it)."""
    detail = eg.audit.get("detail") or {}
    cause = detail.get("cause") if isinstance(detail, dict) else None
    return CAUSES.get(str(cause), str(cause)) if cause is not None else None


def egress_headers(eg: NewEgress, topic: str, view: str, link: EgressLink) -> list[Header]:
    tombstone = eg.kind == "tombstone"
    sealed = link.seal(topic, Link(eg.event_offset, eg.event_type, eg.tombstone_for,
                                   eg.payload if tombstone else None))
    return [*headers(view=view, kind=eg.kind, released_ms=eg.released_ms,
                     expires_on=eg.expires_on.isoformat() if eg.expires_on else None,
                     cause=cause_of(eg) if tombstone else None,
                     traceparent=eg.traceparent),
            (LINK_HEADER, sealed)]


def egress_key(eg: NewEgress) -> bytes:
    if not eg.ref:  # every view has a ref (broker/policy/views.py); a tombstone copies it
        raise ValueError(f"egress {eg.recipient}/{eg.purpose}: a {eg.kind} without a ref "
                         f"(event offset {eg.event_offset}) cannot be keyed")
    return eg.ref.encode("ascii")


def egress_value(eg: NewEgress) -> bytes | None:
    """The view as released; a tombstone is Kafka's: a null value."""
    return None if eg.kind == "tombstone" else eg.payload


def record_link(record: Any, link: EgressLink) -> Link:
    sealed = header_bytes(record, LINK_HEADER)
    if sealed is None:
        raise StorageError(f"egress topic {record.topic} offset {record.offset}: no "
                           f"{LINK_HEADER} header; not written by this broker")
    return link.open(str(record.topic), sealed)


def to_egress_record(record: Any, recipient: str, purpose: str,
                     link: EgressLink) -> EgressRecord:
    try:
        found = record_link(record, link)
        kind = header(record, "kind") or "record"
        expires = header(record, "expires_on")
        if kind == "tombstone":
            if found.tombstone is None:
                raise ValueError("a tombstone whose link holds no tombstone payload")
            payload = found.tombstone
        else:
            if record.value is None:
                raise ValueError("a record without a value")
            payload = bytes(record.value)
        return EgressRecord(recipient, purpose, int(record.offset), found.event_type, kind,
                            payload, found.event_offset,
                            record.key.decode("ascii") if record.key else None,
                            date.fromisoformat(expires) if expires else None,
                            int(header(record, "released_ms") or 0),
                            traceparent=header(record, "traceparent"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise StorageError(f"egress {recipient}/{purpose} offset {record.offset}: malformed "
                           f"record ({exc})") from None


def tombstone_for(record: Any, link: EgressLink) -> int | None:
    """The offset of the released record a tombstone ends (None for a released record)."""
    return record_link(record, link).tombstone_for if header(record, "kind") == "tombstone" \
        else None
