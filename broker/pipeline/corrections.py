"""Corrections and withdrawals from the sources (AVG art. 19), one core for both backends.

A source corrects an event it sent by sending the whole corrected event with the original
event_id, or withdraws it with the original event_id and a reason (schemas/records/
withdrawal.avsc). Both are checked like any input (the source's signature, validation and
limits, through broker/pipeline/triage.py), then against the original:
  unknown_original     no event of this type with this event_id was ever stored
  source_not_owner     another source sent the original; only its owner may revise it
  already_withdrawn    the event was withdrawn: nothing more can be done to it
  duplicate_correction the same corrected event as the latest correction (a re-send)
Bad input is quarantined with its reason code, never dropped.

Applying a revision (`apply`) is one batch, committed with the revision's sequence number
as the consumer position (so each revision is applied once): every live record of the
event (released, no tombstone yet) gets one retraction, a tombstone with cause `rectified`
or `withdrawn`; a correction is then decided afresh at the decision time, under the
control state then, as the same stored event (same store offset, so a recipient can tell
it replaces the earlier record) with the corrected payload. A recipient that did not get
the original but qualifies now gets the new record only. A withdrawn record has its
tombstone, so no expiry tombstone follows for it.

Both backends run these rules: the embedded one in Broker.ingest_revisions /
apply_revisions (one committed batch per revision, the revision's seq as the position),
Kafka in the partition worker that owns the original's partition, inside the batch's
transaction (broker/backends/kafka/revisions.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime

from broker.audit import trace
from broker.audit.entries import Draft, draft, with_fields
from broker.clock import from_millis, to_millis
from broker.errors import InvalidEvent
from broker.keys import commitment
from broker.logs import scrub
from broker.model.json_input import convert
from broker.model.schemas import Schema, SchemaRegistry
from broker.pipeline.decide import DecideCounts, Decider
from broker.pipeline.expiry import tombstone
from broker.pipeline.ingest import _parse_json
from broker.pipeline.port import (
    DecisionBatch,
    EgressRecord,
    NewRevision,
    Quarantined,
    RevisionReader,
    StoredEvent,
    StoredRevision,
)
from broker.pipeline.triage import RawInput, Triage
from broker.policy.decision import DecisionContext

CONSUMER = "corrections"
CORRECTION, WITHDRAWAL = "correction", "withdrawal"
ACTIONS = (CORRECTION, WITHDRAWAL)
CAUSE = {CORRECTION: "rectified", WITHDRAWAL: "withdrawn"}
WITHDRAWAL_SCHEMA = "records.withdrawal"

UNKNOWN_REASON = ("no event of this type with this event_id was stored; a correction or "
                  "withdrawal needs the original")
WITHDRAWN_REASON = "the event was withdrawn earlier; it can be neither corrected nor withdrawn"
DUPLICATE_REASON = "the same correction of this event was received before"
RETRACT_REASON = {
    CORRECTION: "the source corrected this event (AVG art. 19); delete your copy of the "
                "record, a corrected record follows where the covenant releases it",
    WITHDRAWAL: "the source withdrew this event (AVG art. 19); delete your copy of the record",
}

Subjects = Callable[[StoredEvent], list[dict[str, str]]]  # keyed pseudonyms of one version


@dataclass
class RevisionTriage:
    revisions: list[NewRevision] = field(default_factory=list)
    positions: list[str] = field(default_factory=list)  # of each revision, in order
    quarantined: list[Quarantined] = field(default_factory=list)
    audits: list[Draft] = field(default_factory=list)  # quarantine entries, then one per revision
    bad_traceparents: int = 0  # inputs whose traceparent was invalid (ignored, not refused)


@dataclass(frozen=True)
class _Candidate:
    item: RawInput
    event_id: str
    payload: bytes  # the corrected event, Avro-encoded (unsealed); b"" for a withdrawal
    record: dict[str, object] | None
    schema: Schema | None
    reason: str


def check_action(action: str) -> str:
    if action not in ACTIONS:
        raise ValueError(f"unknown revision action {action!r}; one of {', '.join(ACTIONS)}")
    return action


def triage_revisions(triage: Triage, registry: SchemaRegistry, action: str,
                     inputs: Iterable[RawInput], now: datetime, log: RevisionReader,
                     subjects: Subjects) -> RevisionTriage:
    """Judge a batch of corrections or withdrawals of one event type; nothing is written.
    `log` holds every original and earlier revision the inputs may name (on Kafka: the
    partition's, with the batch in hand before them)."""
    check_action(action)
    now_ms = to_millis(now)
    key = triage.commitment_key
    bad: list[tuple[RawInput, str, str]] = []
    good: list[_Candidate] = []
    for item in inputs:
        try:
            good.append(_candidate(triage, registry, action, item, now_ms))
        except InvalidEvent as exc:
            bad.append((item, exc.code, exc.reason))
    out = RevisionTriage()
    accepted: list[tuple[_Candidate, StoredEvent, trace.Inbound]] = []
    for event_type in dict.fromkeys(c.item.event_type for c in good):
        ids = list(dict.fromkeys(c.event_id for c in good if c.item.event_type == event_type))
        originals = log.originals(event_type, ids)
        withdrawn = {r.event_id for r in log.revisions_of(event_type, ids)
                     if r.action == WITHDRAWAL}
        latest = {r.event_id: r.digest for r in log.revisions_of(event_type, ids)
                  if r.action == CORRECTION}
        for c in (c for c in good if c.item.event_type == event_type):
            original = originals.get(c.event_id)
            digest = commitment(key, c.payload) if action == CORRECTION else ""
            if original is None:
                bad.append((c.item, "unknown_original", UNKNOWN_REASON))
            elif original.source != c.item.source:
                bad.append((c.item, "source_not_owner", f"the event was sent by "
                            f"{original.source}; only that source may correct or withdraw it"))
            elif c.event_id in withdrawn:
                bad.append((c.item, "already_withdrawn", WITHDRAWN_REASON))
            elif action == CORRECTION and latest.get(c.event_id) == digest:
                bad.append((c.item, "duplicate_correction", DUPLICATE_REASON))
            else:
                if action == WITHDRAWAL:
                    withdrawn.add(c.event_id)
                else:
                    latest[c.event_id] = digest
                span = triage.span(c.item, out)  # the source's trace, as an event's
                accepted.append((c, original, span))
                out.revisions.append(_revision(triage, action, c, original, digest, span))
                out.positions.append(c.item.position)
    out.quarantined, out.audits = triage.quarantine(bad, now, out)
    out.audits += [_audit(action, c, original, subjects(original), triage, now_ms, span)
                   for c, original, span in accepted]
    return out


def _candidate(triage: Triage, registry: SchemaRegistry, action: str, item: RawInput,
               now_ms: int) -> _Candidate:
    if action == CORRECTION:  # the whole corrected event: every check an event gets
        ok = triage.accept(item, now_ms)
        return _Candidate(item, ok.event_id, ok.payload, ok.record, ok.schema, "")
    triage.check_signature(item)
    raw = item.raw if isinstance(item.raw, bytes) else b""
    if len(raw) > triage.limits.max_event_bytes:
        raise InvalidEvent("event_too_large", f"{len(raw)} bytes, the limit is "
                           f"{triage.limits.max_event_bytes}")
    conversion = convert(registry.get(WITHDRAWAL_SCHEMA).raw, _parse_json(raw), triage.limits)
    reason = str(conversion.record["reason"]).strip()
    if not reason:
        raise InvalidEvent("missing_reason", "a withdrawal needs a reason")
    return _Candidate(item, str(conversion.record["event_id"]).lower(), b"", None, None,
                      reason)


def _revision(triage: Triage, action: str, c: _Candidate, original: StoredEvent,
              digest: str, span: trace.Inbound) -> NewRevision:
    payload = b""
    if c.schema is not None and c.record is not None:
        # sealed as the original is, bound to its event_id: the decider opens it as the event
        ingested = from_millis(original.ingested_ms)
        payload = triage.sealer.seal(c.schema, dict(c.record), c.event_id,
                                     triage.sealer.retention_until(original.event_type,
                                                                   ingested))
    return NewRevision(action, original.event_type, original.source, original.event_id,
                       original.offset, payload, c.reason, digest, span.trace_id,
                       span.caller.header() if span.caller else None)


def _audit(action: str, c: _Candidate, original: StoredEvent,
           subjects: list[dict[str, str]], triage: Triage, now_ms: int,
           span: trace.Inbound) -> Draft:
    """The source's request itself, naming the persons of the event it revises, in the
    source's trace (its span the foreign operation) when it sent a valid traceparent."""
    detail = {"position": c.item.position, "original_offset": str(original.offset),
              **trace.foreign_detail(span.caller, trace.party_uri(original.source))}
    return draft(action, start_ms=now_ms, **span.audit_fields(), **triage.covenant_fields,
                 source=original.source, event_type=original.event_type,
                 event_id=original.event_id, event_offset=original.offset,
                 decision="correct" if action == CORRECTION else "withdraw",
                 reason_code=f"{action}_request",
                 reason=scrub(c.reason) if action == WITHDRAWAL else None,
                 data_subjects=subjects, detail=detail)


def as_stored(revision: StoredRevision, original: StoredEvent) -> StoredEvent:
    """A correction as the decider takes it: the original's store offset and ingest time
    (its retention runs from the first ingest), the corrected payload, its own trace (and
    the source's span that sent it, not the original's). Never the original's plaintext
    (`fresh`, set when the original was stored in the batch in hand): the decision opens
    the corrected payload."""
    return replace(original, payload=revision.payload, trace_id=revision.trace_id,
                   foreign_trace=revision.foreign_trace, fresh=None)


def version_before(revision: StoredRevision, earlier: Iterable[StoredRevision],
                   original: StoredEvent) -> StoredEvent:
    """The version of the event its live records were released from: the latest
    correction before `revision` among the event's revisions `earlier`, else the original."""
    before = [r for r in earlier if r.seq < revision.seq and r.action == CORRECTION
              and r.event_id == revision.event_id]
    return as_stored(before[-1], original) if before else original


def apply(revision: StoredRevision, original: StoredEvent, live: list[EgressRecord],
          decider: Decider, tombstone_schema: Schema, ctx: DecisionContext,
          retracted_subjects: list[dict[str, str]], counts: DecideCounts) -> DecisionBatch:
    """One revision as one batch: a retraction per live record, then (a correction) the
    corrected event decided afresh. `retracted_subjects` are the persons of the version
    the live records were released from."""
    batch = DecisionBatch(consumer=CONSUMER, position=revision.seq)
    cause = CAUSE[revision.action]
    tag = {"revision": str(revision.seq), "action": revision.action}
    # the retractions go on in the revision's trace, as its corrected decisions do
    caller = trace.lenient(revision.foreign_trace)
    foreign = trace.foreign_detail(caller, trace.party_uri(revision.source))
    for record in live:
        eg = tombstone(record, decider.plans, tombstone_schema, decider.commitment_key, ctx,
                       cause=cause, after=ctx.today, decision="retract", reason_code=cause,
                       reason=RETRACT_REASON[revision.action], trace_id=revision.trace_id)
        batch.egress.append(replace(eg, audit=with_fields(
            eg.audit, **trace.foreign_fields(caller), source=original.source,
            event_id=original.event_id, data_subjects=retracted_subjects,
            detail={**eg.audit["detail"], **foreign, **tag})))
    if revision.action == CORRECTION:
        decided = decider.decide([as_stored(revision, original)], ctx, CONSUMER, counts)
        batch.egress += [replace(eg, audit=with_fields(
            eg.audit, detail={**eg.audit["detail"], **tag})) for eg in decided.egress]
        batch.audits += [with_fields(a, detail={**a["detail"], **tag})
                         for a in decided.audits]
    return batch
