"""The event log port: what the pipeline needs from a backend, and the rows it exchanges.

Each backend (embedded SQLite, Kafka) implements EventLog. The methods that take audit
drafts are atomic: the rows and their audit entries are written together or not at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol

from broker.audit.entries import Draft
from broker.policy.control import ControlEvent, ThemeSwitch


@dataclass(frozen=True)
class NewEvent:
    event_type: str
    source: str
    event_id: str
    payload: bytes  # Avro single-object encoding of the event
    trace_id: str
    foreign_trace: str | None = None  # W3C traceparent the source sent, if any


@dataclass(frozen=True)
class StoredEvent:
    offset: int
    event_type: str
    source: str
    event_id: str
    payload: bytes
    trace_id: str
    ingested_ms: int
    foreign_trace: str | None = None


@dataclass(frozen=True)
class Quarantined:
    source: str
    declared_type: str
    position: str  # "line 7", or a topic-partition-offset
    reason_code: str
    reason: str
    raw: bytes
    received_ms: int


@dataclass
class NewEgress:
    """A record for one (recipient, purpose) stream, with the audit draft that justifies it.

    The backend assigns the stream offset and writes it into the draft before sealing.
    """

    recipient: str
    purpose: str
    event_type: str
    kind: str  # "record" or "tombstone"
    payload: bytes
    event_offset: int
    ref: str | None
    expires_on: date | None
    released_ms: int
    audit: Draft
    tombstone_for: int | None = None  # for tombstones: offset of the released record
    sealed_payload: bytes | None = None  # the same record with personal fields sealed,
    # for backends that hold deliveries at rest (embedded); `payload` is what is delivered


@dataclass(frozen=True)
class EgressRecord:
    recipient: str
    purpose: str
    offset: int
    event_type: str
    kind: str
    payload: bytes
    event_offset: int
    ref: str | None
    expires_on: date | None
    released_ms: int


@dataclass
class DecisionBatch:
    """Everything one decide step writes: atomically with the consumer position."""

    consumer: str
    position: int  # last store offset covered by this batch
    egress: list[NewEgress] = field(default_factory=list)
    audits: list[Draft] = field(default_factory=list)  # withheld decisions and the like


class EventLog(Protocol):
    def append_ingest(self, events: list[NewEvent], quarantined: list[Quarantined],
                      audits: list[Draft], now_ms: int) -> list[StoredEvent]: ...

    def duplicate_ids(self, event_type: str, event_ids: list[str]) -> set[str]: ...

    def read_store(self, after: int, limit: int) -> list[StoredEvent]: ...

    def position(self, consumer: str) -> int: ...

    def commit_decisions(self, batch: DecisionBatch, now_ms: int) -> list[EgressRecord]: ...

    def read_egress(self, recipient: str, purpose: str | None,
                    from_offset: int) -> list[EgressRecord]: ...

    def streams(self, recipient: str) -> list[str]: ...

    def expiring(self, before: date) -> list[EgressRecord]: ...

    def without_tombstone(self, released: list[tuple[str, str, int]]
                          ) -> list[EgressRecord]:
        """The released records at these (recipient, purpose, offset) that no tombstone
        ends yet (expiry or erasure notice), in the order given."""
        ...

    def append_theme_switch(self, theme: str, on: bool, effective_ms: int,
                            audit: Draft, now_ms: int) -> ThemeSwitch: ...

    def theme_switches(self) -> list[ThemeSwitch]: ...

    def append_control(self, event: ControlEvent, audit: Draft,
                       document: bytes | None = None) -> ControlEvent: ...

    def control_events(self) -> list[ControlEvent]: ...

    def document(self, sha256: str) -> bytes | None: ...

    def append_audit(self, audits: list[Draft], now_ms: int) -> None: ...

    def audit_rows(self) -> Iterator[tuple[int, bytes]]: ...

    def audit_entries(self) -> Iterator[bytes]:
        """Every audit entry (on Kafka: partition by partition)."""
        ...

    def quarantine_count(self) -> int: ...

    def close(self) -> None: ...
