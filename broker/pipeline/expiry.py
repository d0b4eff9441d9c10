"""Expiry: when a released record's basis ends, its recipient gets one tombstone for it.

For an area ban the basis ends after valid_until; the sweep runs whenever a command or
the running service reaches a decision time whose calendar date is past that day.
`tombstone` builds one tombstone with its audit draft; erasure notices
(broker/pipeline/erasure.py) are tombstones too, with cause "erasure".
"""

from __future__ import annotations

from datetime import date

from broker.audit.entries import PROCESSING_ACTIVITY, draft
from broker.keys import commitment
from broker.model.schemas import Schema
from broker.pipeline.port import DecisionBatch, EgressRecord, NewEgress
from broker.policy.decision import DecisionContext
from broker.policy.plan import PlanSet

CONSUMER = "expiry"


def tombstone(record: EgressRecord, plans: PlanSet, tombstone_schema: Schema,
              commitment_key: bytes, ctx: DecisionContext, *, cause: str, after: date,
              decision: str, reason_code: str, reason: str,
              trace_id: str | None = None) -> NewEgress:
    """The tombstone that ends one released record, audited (the caller adds data_subjects);
    `trace_id`: the trace it goes on in (a revision's), else one of its own."""
    header = plans.covenant.covenant
    payload = tombstone_schema.encode({
        "ref": record.ref, "expired": True, "expired_after": after,
        "released_offset": record.offset, "reason": reason, "cause": cause})
    plan = plans.plan(record.event_type, record.purpose, record.recipient)
    audit = draft(
        "tombstone", trace_id=trace_id, start_ms=ctx.now_ms,
        covenant_id=header.id, covenant_version=header.version, purpose=record.purpose,
        legal_basis=plan.legal_basis if plan else None, recipient=record.recipient,
        decision=decision, reason_code=reason_code, reason=reason,
        policy_hash=plan.policy_hash if plan else None, event_type=record.event_type,
        event_offset=record.event_offset,
        delivered_commitment=commitment(commitment_key, payload),
        detail={"released_offset": str(record.offset), "cause": cause,
                **({PROCESSING_ACTIVITY: plan.processing_activity_id} if plan else {})})
    return NewEgress(record.recipient, record.purpose, record.event_type, "tombstone",
                     payload, record.event_offset, record.ref, None, ctx.now_ms, audit,
                     tombstone_for=record.offset)


def tombstones(due: list[EgressRecord], plans: PlanSet, tombstone_schema: Schema,
               commitment_key: bytes, ctx: DecisionContext) -> DecisionBatch:
    batch = DecisionBatch(consumer=CONSUMER, position=-1)
    for record in due:
        if record.ref is None or record.expires_on is None:
            continue
        batch.egress.append(tombstone(
            record, plans, tombstone_schema, commitment_key, ctx, cause="expired",
            after=record.expires_on, decision="expire", reason_code="basis_ended",
            reason=f"the basis of this record ended after {record.expires_on.isoformat()}"))
    return batch
