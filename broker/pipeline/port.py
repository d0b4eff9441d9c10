"""The event log port: what the pipeline needs from a backend, split by capability, and
the rows it exchanges.

The capabilities widen the way eventsourcing's recorders do: every backend reads the store,
egress and control log, appends audit entries and writes tombstones (`EventLog`); the
embedded backend also writes the store and decides synchronously (`StoreWriter`,
`DecisionSink`); the Kafka backend instead publishes raw input to ingress for `serve`
(`IngressPublisher`) and keeps one audit chain per partition (`PartitionChains`). A backend
class names the capabilities it implements as its bases, and implements all of each;
broker/app/assembly.py hands them out, the optional ones as `X | None`.

The methods that take audit drafts are atomic: the rows and their audit entries are written
together or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol

from broker.audit.chain import ChainReport
from broker.audit.entries import Draft
from broker.audit.integrate import IntegrationCheck
from broker.audit.sqlite_integrated import IntegratedAuditDb
from broker.crypto.sealing import Fresh
from broker.pipeline.ingest import Oversized
from broker.policy.control import ControlEvent, ThemeSwitch


@dataclass(frozen=True)
class NewEvent:
    event_type: str
    source: str
    event_id: str
    payload: bytes  # Avro single-object encoding of the event
    trace_id: str  # the source's trace when it sent a valid traceparent, else the broker's
    foreign_trace: str | None = None  # W3C traceparent the source sent, if valid
    # the plaintext just sealed into `payload`, for the decision of the same batch
    fresh: Fresh | None = field(default=None, compare=False, repr=False)


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
    # Set only for an event stored by the batch that decides it: the plaintext the triage
    # validated and sealed into `payload`, so the decision need not open what was just
    # sealed (`Decider.open`). None for everything read back from the store.
    fresh: Fresh | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Quarantined:
    source: str
    declared_type: str
    position: str  # "line 7", or a topic-partition-offset
    reason_code: str
    reason: str
    raw: bytes
    received_ms: int

    def note(self) -> QuarantineNote:
        return QuarantineNote(self.position, self.reason_code, self.reason)


@dataclass(frozen=True)
class QuarantineNote:
    """What the caller of an ingest is told of a quarantined input: where it was and why,
    never its content."""

    position: str  # "line 7" (embedded), topic:partition:offset (Kafka)
    reason_code: str
    reason: str


@dataclass(frozen=True)
class NewRevision:
    """A source's correction or withdrawal of an event it sent (AVG art. 19), accepted.

    A correction holds the whole corrected event (sealed as a stored event is); a
    withdrawal holds no event, only the source's reason. `digest` is a keyed commitment to
    the corrected event's encoding: re-sending the identical correction is a duplicate.
    """

    action: str  # "correction" or "withdrawal"
    event_type: str
    source: str
    event_id: str
    original_offset: int  # store offset of the original event
    payload: bytes  # sealed corrected event; b"" for a withdrawal
    reason: str  # the withdrawal's reason; "" for a correction
    digest: str
    trace_id: str  # the source's trace when it sent a valid traceparent, else the broker's
    foreign_trace: str | None = None  # W3C traceparent the source sent, if valid


@dataclass(frozen=True)
class StoredRevision:
    seq: int  # order of revisions, from 0
    action: str
    event_type: str
    source: str
    event_id: str
    original_offset: int
    payload: bytes
    reason: str
    digest: str
    trace_id: str
    ingested_ms: int
    after_store_offset: int  # the last store offset when it was stored: its place in replay
    foreign_trace: str | None = None  # W3C traceparent the source sent, if valid


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
    traceparent: str | None = None  # W3C trace context of the broker's span for this record


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
    traceparent: str | None = None  # the broker's span for this record (broker/audit/trace.py)


@dataclass
class DecisionBatch:
    """Everything one decide step writes: atomically with the consumer position."""

    consumer: str
    position: int  # last store offset covered by this batch
    egress: list[NewEgress] = field(default_factory=list)
    audits: list[Draft] = field(default_factory=list)  # withheld decisions and the like


@dataclass
class IngressReport:
    """What publishing raw input to ingress did (`ingest` on a backend that decides in
    `serve`)."""

    source: str
    event_type: str
    topic: str
    produced: int = 0
    partitions: dict[int, int] = field(default_factory=dict)
    oversized: int = 0  # of those produced, lines over max_event_bytes (bounded form)


def check_tombstone_batch(batch: DecisionBatch) -> None:
    """A tombstone batch (expiry, erasure notices) moves no consumer position and holds
    tombstones only: the decide step's records go through DecisionSink."""
    if batch.position >= 0:
        raise ValueError(f"a tombstone batch carries no consumer position (got "
                         f"{batch.position}); decisions go through commit_decisions")
    kinds = sorted({eg.kind for eg in batch.egress} - {"tombstone"})
    if kinds:
        raise ValueError(f"a tombstone batch holds tombstones only (got {', '.join(kinds)})")


# -- every backend ----------------------------------------------------------------------------
class StoreReader(Protocol):
    def read_store(self, after: int, limit: int) -> list[StoredEvent]:
        """Stored events with a store offset after `after`, in offset order."""
        ...

    def quarantine_count(self) -> int: ...


class TombstoneWriter(Protocol):
    def write_tombstones(self, batch: DecisionBatch, now_ms: int) -> list[EgressRecord]:
        """Expiry tombstones or erasure notices with their audit entries, atomically; the
        batch moves no consumer position (check_tombstone_batch)."""
        ...


class EgressReader(Protocol):
    def read_egress(self, recipient: str, purpose: str | None,
                    from_offset: int) -> list[EgressRecord]: ...

    def streams(self, recipient: str) -> list[str]: ...

    def expiring(self, before: date) -> list[EgressRecord]: ...

    def without_tombstone(self, released: list[tuple[str, str, int]]
                          ) -> list[EgressRecord]:
        """The released records at these (recipient, purpose, offset) that no tombstone
        ends yet (expiry or erasure notice), in the order given."""
        ...


class ControlLog(Protocol):
    def append_theme_switch(self, theme: str, on: bool, effective_ms: int,
                            audit: Draft, now_ms: int) -> ThemeSwitch: ...

    def theme_switches(self) -> list[ThemeSwitch]: ...

    def append_control(self, event: ControlEvent, audit: Draft,
                       document: bytes | None = None) -> ControlEvent: ...

    def control_events(self) -> list[ControlEvent]: ...

    def document(self, sha256: str) -> bytes | None: ...


class AuditAppender(Protocol):
    def append_audit(self, audits: list[Draft], now_ms: int) -> None: ...

    def audit_entries(self) -> Iterator[bytes]:
        """Every audit entry (on Kafka: partition by partition)."""
        ...


class EventLog(StoreReader, TombstoneWriter, EgressReader, ControlLog, AuditAppender,
               Protocol):
    """What every backend's event log implements."""

    def close(self) -> None: ...


# -- the synchronous pipeline (embedded) ------------------------------------------------------
class StoreWriter(Protocol):
    def append_ingest(self, events: list[NewEvent], quarantined: list[Quarantined],
                      audits: list[Draft], now_ms: int) -> list[StoredEvent]: ...

    def duplicate_ids(self, event_type: str, event_ids: list[str]) -> set[str]: ...


class RevisionReader(Protocol):
    """The stored corrections and withdrawals (broker/pipeline/corrections.py), as every
    backend keeps them: what triage judges a revision against, and what replay and the
    audit's subject look-ups read. (On Kafka `serve` writes them: no append here.)"""

    def read_revisions(self, after: int, limit: int) -> list[StoredRevision]:
        """Revisions with a seq after `after`, in seq order."""
        ...

    def revisions_of(self, event_type: str, event_ids: list[str]) -> list[StoredRevision]:
        """The revisions of these events, in order."""
        ...

    def originals(self, event_type: str, event_ids: list[str]) -> dict[str, StoredEvent]:
        """The stored events with these ids, by id."""
        ...


class RevisionLog(RevisionReader, Protocol):
    """Corrections and withdrawals stored beside the store (whose event ids are unique per
    type), with the live records they retract, applied in the caller (embedded)."""

    def append_revisions(self, revisions: list[NewRevision], quarantined: list[Quarantined],
                         audits: list[Draft], now_ms: int) -> list[StoredRevision]: ...

    def live_records(self, event_type: str, event_offset: int) -> list[EgressRecord]:
        """The released records of one stored event that no tombstone ends yet."""
        ...


class DecisionSink(Protocol):
    """The decide step's output recorded atomically with the store position it consumed,
    so a batch is decided exactly once."""

    def position(self, consumer: str) -> int: ...

    def commit_decisions(self, batch: DecisionBatch, now_ms: int) -> list[EgressRecord]: ...


class AuditChain(Protocol):
    """The audit log as one hash chain, by sequence number."""

    def audit_rows(self) -> Iterator[tuple[int, bytes]]: ...


# -- the asynchronous pipeline (Kafka) --------------------------------------------------------
class IngressPublisher(Protocol):
    """`ingest` publishes raw input and returns; a long-running `serve` validates, stores
    and decides."""

    def publish(self, source: str, event_type: str, lines: Iterable[tuple[int, bytes | Oversized]],
                signatures: Mapping[int, bytes] | None = None,
                traceparent: str | None = None, action: str | None = None) -> IngressReport:
        """`traceparent`: the source operation's W3C trace context, as the `traceparent`
        header of every record (serve validates it). `action`: "correction" or
        "withdrawal" (broker/pipeline/corrections.py) as every record's `action` header;
        None for new events."""
        ...


class IngressPurge(Protocol):
    """The backend keeps raw input (in plaintext) until purged."""

    def purge_consumed_ingress(self) -> int:
        """Delete the raw input `serve` consumed; the number of partitions purged."""
        ...


class PartitionChains(Protocol):
    """The audit log as one hash chain per audit partition."""

    def verify_audit_partitions(self) -> dict[int, ChainReport]: ...

    def check_integrated(self, store: IntegratedAuditDb) -> IntegrationCheck:
        """The integrated log (`audit integrate`) against the chains: every integrated
        entry a chain entry, once and in order; what the chains hold beyond it pending."""
        ...
