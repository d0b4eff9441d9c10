"""Triage: raw input to an event ready to store, or to a sealed quarantine record.

The one place both backends turn input into what is stored: the source's signature, the
validation of broker/pipeline/ingest.py, the duplicate check (within the batch and against
the ids the backend already stores), sealing of the personal fields, and for bad input the
quarantine record (sealed too: bad input may hold personal data) with its audit draft.
The embedded ingest and the Kafka partition worker both call `Triage.triage`; what is left
to them is where the result goes.

An input over max_event_bytes is never kept whole (issue 15, item 7): its record holds its
length, SHA-256 and its first PREFIX_BYTES bytes (broker/pipeline/ingest.py), whether the
caller read it as a bounded stream (an `Oversized`) or has it in memory (a Kafka value).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from broker.audit import trace
from broker.audit.entries import Draft, draft
from broker.clock import local_date, to_millis
from broker.crypto.sealing import Fresh, Sealer
from broker.errors import InvalidEvent
from broker.keys import commitment
from broker.model.json_input import Limits
from broker.model.schemas import SchemaRegistry
from broker.pipeline.ingest import Accepted, Oversized, validate
from broker.pipeline.port import Quarantined

__all__ = ["Oversized", "RawInput", "TraceCount", "Triage", "TriageResult", "TriagedEvent"]

@dataclass(frozen=True)
class RawInput:
    source: str
    event_type: str
    position: str  # "line 7", or topic:partition:offset
    raw: bytes | Oversized
    signature: bytes | None = None
    traceparent: str | bytes | None = None  # a W3C traceparent the input came with, as sent


@dataclass(frozen=True)
class TriagedEvent:
    """An accepted event: its personal fields sealed, ready to store."""

    event_type: str
    source: str
    event_id: str
    payload: bytes  # sealed envelope
    position: str
    dropped_fields: list[str]
    traceparent: str | None  # the source's traceparent if valid (version-00 form), else None
    trace_id: str  # the source's trace when it sent a valid traceparent, else a new one
    # the plaintext sealed into `payload`: what the decision of this batch reads
    fresh: Fresh | None = field(default=None, compare=False, repr=False)


@dataclass
class TriageResult:
    events: list[TriagedEvent] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)  # raw already sealed
    audits: list[Draft] = field(default_factory=list)  # one per quarantine record, in order
    elsewhere: list[tuple[RawInput, str]] = field(default_factory=list)  # (input, event_id)
    bad_traceparents: int = 0  # inputs whose traceparent was invalid (ignored, not refused)


class SourceKeyCheck(Protocol):
    def check(self, source: str, event_type: str, value: bytes,
              signature: bytes | None) -> None: ...


class TraceCount(Protocol):
    """Where inputs whose traceparent was invalid are counted (a batch's result)."""

    bad_traceparents: int


# (event_type, candidate ids) -> the ids among them the backend already stores
KnownIds = Callable[[str, list[str]], set[str]]

DUPLICATE_REASON = "an event with this event_id is already stored or earlier in this input"


class Triage:
    def __init__(self, registry: SchemaRegistry, limits: Limits, source_keys: SourceKeyCheck,
                 sealer: Sealer, commitment_key: bytes, covenant_fields: dict[str, Any],
                 zone: Any, quarantine_retention_days: int) -> None:
        self.registry = registry
        self.limits = limits
        self.source_keys = source_keys
        self.sealer = sealer
        self.commitment_key = commitment_key
        self.covenant_fields = dict(covenant_fields)  # covenant_id, covenant_version
        self.zone = zone
        self.quarantine_retention_days = quarantine_retention_days

    def triage(self, inputs: Iterable[RawInput], now: datetime, known: KnownIds,
               is_home: Callable[[str], bool] | None = None) -> TriageResult:
        """Judge a batch. `known` answers which ids are already stored; `is_home` (Kafka)
        says whether an event id belongs to this caller, the others come back in
        `elsewhere` unjudged for duplicates, unsealed."""
        now_ms = to_millis(now)
        out = TriageResult()
        bad: list[tuple[Quarantined, Oversized | None, trace.Inbound]] = []
        good: list[tuple[RawInput, Accepted, trace.Inbound]] = []
        for item in inputs:
            try:
                ok = self._validate(item, now_ms)
            except InvalidEvent as exc:
                span = self.span(item, out)
                bad.append((*self._bad(item, exc.code, exc.reason, now_ms), span))
                continue
            if is_home is not None and not is_home(ok.event_id):
                # judged (and its traceparent counted) where it belongs
                out.elsewhere.append((item, ok.event_id))
                continue
            good.append((item, ok, self.span(item, out)))
        seen: dict[str, set[str]] = {}
        for event_type in dict.fromkeys(i.event_type for i, _, _ in good):
            seen[event_type] = set(known(event_type, [a.event_id for i, a, _ in good
                                                      if i.event_type == event_type]))
        for item, ok, span in good:
            ids = seen[item.event_type]
            if ok.event_id in ids:
                bad.append((*self._bad(item, "duplicate_event", DUPLICATE_REASON, now_ms),
                            span))
                continue
            ids.add(ok.event_id)
            sealed, fresh = self.sealer.seal_fresh(
                ok.schema, ok.record, ok.event_id,
                self.sealer.retention_until(item.event_type, now))
            out.events.append(TriagedEvent(
                item.event_type, item.source, ok.event_id, sealed, item.position,
                ok.dropped_fields, span.caller.header() if span.caller else None,
                span.trace_id, fresh))
        out.audits = [self._audit(q, over, span) for q, over, span in bad]
        out.quarantined = [self._seal(q, now) for q, _, _ in bad]
        return out

    def flush_keys(self) -> None:
        """Data keys are buffered by the key store: they must be durable before anything
        sealed under them commits, or a crash leaves stored events nobody can open. Both
        backends call this just before their commit."""
        self.sealer.flush()

    # -- corrections and withdrawals (broker/pipeline/corrections.py) --------------------------
    def check_signature(self, item: RawInput) -> bytes:
        """The source's signature of an input (a correction or withdrawal too); an oversized
        input is refused by its size alone: its bytes are gone."""
        if isinstance(item.raw, Oversized):
            raise InvalidEvent("event_too_large", f"{item.raw.length} bytes, the limit is "
                               f"{self.limits.max_event_bytes}")
        self.source_keys.check(item.source, item.event_type, item.raw, item.signature)
        return item.raw

    def accept(self, item: RawInput, now_ms: int) -> Accepted:
        """Signature and validation of one input, as `triage` does them (InvalidEvent)."""
        return self._validate(item, now_ms)

    def quarantine(self, bad: list[tuple[RawInput, str, str]], now: datetime,
                   out: TraceCount) -> tuple[list[Quarantined], list[Draft]]:
        """Quarantine records (sealed) and their audit drafts for (input, code, reason),
        each in the input's trace (its bad traceparent counted in `out`)."""
        judged = [(*self._bad(item, code, reason, to_millis(now)), self.span(item, out))
                  for item, code, reason in bad]
        return ([self._seal(q, now) for q, _, _ in judged],
                [self._audit(q, over, span) for q, over, span in judged])

    # -- the steps ----------------------------------------------------------------------------
    @staticmethod
    def span(item: RawInput, out: TraceCount) -> trace.Inbound:
        """The input's trace: the source's if its traceparent is valid; a bad one is
        counted and otherwise ignored, never a reason to quarantine."""
        span = trace.inbound(item.traceparent)
        if span.bad:
            out.bad_traceparents += 1
        return span

    def _validate(self, item: RawInput, now_ms: int) -> Accepted:
        raw = self.check_signature(item)
        return validate(raw, item.source, item.event_type, self.registry, self.limits,
                        now_ms=now_ms)

    def _bad(self, item: RawInput, code: str, reason: str,
             now_ms: int) -> tuple[Quarantined, Oversized | None]:
        over = item.raw if isinstance(item.raw, Oversized) else None
        raw = item.raw if isinstance(item.raw, bytes) else b""
        if over is None and len(raw) > self.limits.max_event_bytes:
            over = Oversized.of(raw)
        kept = over.bounded_form() if over is not None else raw
        return Quarantined(item.source, item.event_type, item.position, code, reason, kept,
                           now_ms), over

    def _audit(self, q: Quarantined, over: Oversized | None, span: trace.Inbound) -> Draft:
        # An oversized input is committed to by what is kept of it; its length and hash
        # say what the whole was.
        detail = {"position": q.position, "bytes": str(len(q.raw) if over is None
                                                       else over.length)}
        if over is not None:
            detail["sha256"] = over.sha256
        detail.update(trace.foreign_detail(span.caller, trace.party_uri(q.source)))
        return draft("quarantine", start_ms=q.received_ms, **span.audit_fields(),
                     source=q.source,
                     event_type=q.declared_type, reason_code=q.reason_code, reason=q.reason,
                     **self.covenant_fields,
                     delivered_commitment=commitment(self.commitment_key, q.raw),
                     detail=detail)

    def _seal(self, q: Quarantined, now: datetime) -> Quarantined:
        """Bad input may hold personal data too: it is sealed under a per-day key."""
        day: date = local_date(now, self.zone)
        until = day + timedelta(days=self.quarantine_retention_days)
        raw = self.sealer.seal_blob(f"quarantine:{day.isoformat()}", until,
                                    f"quarantine|{q.source}|{q.position}", q.raw)
        return Quarantined(q.source, q.declared_type, q.position, q.reason_code, q.reason,
                           raw, q.received_ms)
