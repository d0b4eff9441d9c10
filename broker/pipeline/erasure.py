"""Erasure notices (AVG art. 19): each recipient that received a record about an erased
person gets one tombstone for it, with cause "erasure".

The records come from the audit log (the release entries that name the person's keyed
pseudonym); the backend drops those that already have a tombstone (expired earlier, or
noticed by an earlier erasure), so erasing twice sends nothing new. A notice carries the
record's opaque reference and stream offset, never the person's identifier.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from broker.model.schemas import Schema
from broker.pipeline.expiry import tombstone
from broker.pipeline.port import DecisionBatch, EgressRecord
from broker.policy.decision import DecisionContext
from broker.policy.plan import PlanSet

CONSUMER = "erasure"
REASON = ("personal data in this record was erased at the data subject's request "
          "(AVG art. 17); delete your copy of the record (AVG art. 19)")
Stream = tuple[str, str, int]  # (recipient, purpose, egress offset)


def released_in(entries: Iterable[dict[str, Any]], pseudonym: str) -> list[Stream]:
    """The records that decided audit entries released about the person, in log order.

    Withheld decisions, tombstones and accesses released nothing new: they are skipped.
    """
    out: dict[Stream, None] = {}  # ordered, without repeats
    for entry in entries:
        if entry.get("name") != "decide" or entry.get("decision") != "release" or \
                entry.get("egress_offset") is None:
            continue
        if not any(s.get("pseudonym") == pseudonym for s in entry.get("data_subjects") or ()):
            continue
        out[(str(entry["recipient"]), str(entry["purpose"]), int(entry["egress_offset"]))] = None
    return list(out)


def notices(released: list[EgressRecord], plans: PlanSet, tombstone_schema: Schema,
            commitment_key: bytes, ctx: DecisionContext) -> DecisionBatch:
    batch = DecisionBatch(consumer=CONSUMER, position=-1)
    for record in released:
        if record.kind != "record":
            continue
        batch.egress.append(tombstone(
            record, plans, tombstone_schema, commitment_key, ctx, cause="erasure",
            after=ctx.today, decision="erase", reason_code="erasure_request", reason=REASON))
    return batch
