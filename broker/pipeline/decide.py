"""Decide: every stored event against every plan for its type, under the control state.

Each (event, purpose, recipient) gets exactly one audit entry, released or withheld; a
release also gets its egress record. The caller commits the whole batch atomically with
the consumer position. Before a plan runs, two facts of the stored event itself can
withhold: the purpose's retention has passed, or a field the plan releases was erased.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date
from typing import Any, cast

from broker.audit import trace
from broker.audit.entries import PROCESSING_ACTIVITY, Draft, draft, new_span_id, new_trace_id
from broker.clock import from_millis
from broker.crypto.sealing import Opened, Sealer
from broker.gcpause import during
from broker.keys import KeyStore, committer
from broker.model.schemas import Schema, SchemaRegistry
from broker.pipeline.port import DecisionBatch, NewEgress, StoredEvent
from broker.policy.decision import Decision, DecisionContext, Release, Withhold
from broker.policy.plan import Plan, PlanSet

DAY_MS = 86_400_000


@dataclass
class DecideCounts:
    events: int = 0
    released: int = 0
    withheld: int = 0


def egress_record_id(recipient: str, purpose: str, event_offset: int) -> str:
    """What a sealed egress record is bound to: its stream and its source event."""
    return f"{recipient}/{purpose}/{event_offset}"


def _span_ids(n: int) -> list[str]:
    """n span ids as `new_span_id` makes them (64 random bits in hex), from one draw."""
    drawn = secrets.token_hex(8 * n)
    return [drawn[i:i + 16] for i in range(0, 16 * n, 16)]


# (path, kind, "kind:") of each subject field, per schema: `Schema.subject_paths` walks
# every field of the schema, and the decider asks once per event.
_subject_layouts: dict[int, tuple[Schema, tuple[tuple[str, str, str], ...]]] = {}


def _subject_layout(schema: Schema) -> tuple[tuple[str, str, str], ...]:
    found = _subject_layouts.get(id(schema))
    if found is None or found[0] is not schema:
        found = _subject_layouts[id(schema)] = (schema, tuple(
            (path, kind, f"{kind}:") for path, kind in schema.subject_paths.items()))
    return found[1]


class Decider:
    def __init__(self, plans: PlanSet, registry: SchemaRegistry, keys: KeyStore,
                 sealer: Sealer, *, seal_egress: bool = True) -> None:
        self.plans = plans
        self.registry = registry
        self.sealer = sealer
        # False: releases carry no sealed_payload (nothing held at rest: Kafka egress, where
        # the view is released as is and compaction removes it after a tombstone, and the
        # in-process hot path of bench/pipeline_bench.py). The embedded egress table: True.
        self.seal_egress = seal_egress
        self.commitment_key = keys.commitment_key()
        self._commit = committer(self.commitment_key)  # `commitment` under that key
        self._stream_trace_id = trace.stream_tracer(self.commitment_key)
        header = plans.covenant.covenant
        self.covenant_id, self.covenant_version = header.id, header.version
        self._personal_cache: dict[tuple[str, str], dict[str, str]] = {}
        # keyed by id(plan), plan held
        self._audit_base: dict[int, tuple[Plan, dict[str, Any]]] = {}

    def open(self, stored: StoredEvent) -> Opened:
        """The event as stored: sealed fields opened, erased ones None and named. An event
        stored by this batch carries the plaintext it was sealed from: nothing to open."""
        if stored.fresh is not None:
            return self.sealer.reopen(stored.fresh)
        if self.sealer.is_envelope(stored.payload):
            return self.sealer.open(stored.payload, record_id=stored.event_id)
        schema, event = self.registry.decode_single_object(stored.payload)
        return Opened(schema, event, set(),
                      self.sealer.subjects(schema, event, stored.event_id))

    @staticmethod
    def data_subjects(opened: Opened) -> list[dict[str, str]]:
        """Keyed pseudonyms of the identified subjects (never the identifiers)."""
        out = []
        subjects = opened.subjects
        for path, kind, prefix in _subject_layout(opened.schema):
            subject = subjects.get(path)
            if subject and subject.startswith(prefix):
                out.append({"pseudonym": subject.split(":", 1)[1], "id_type": kind,
                            "role": path})
        return out

    @during  # a batch: the cyclic collector paused (broker/gcpause.py)
    def decide(self, events: list[StoredEvent], ctx: DecisionContext, consumer: str,
               counts: DecideCounts | None = None) -> DecisionBatch:
        counts = counts if counts is not None else DecideCounts()
        batch = DecisionBatch(consumer=consumer, position=events[-1].offset if events else -1)
        for stored in events:
            counts.events += 1
            try:
                egress, audits = self._decide_event(stored, ctx, counts)
            except Exception as exc:  # noqa: BLE001 - one poison event must not stop the log
                egress, audits = [], self._failed(stored, exc, ctx, counts)
            batch.egress.extend(egress)
            batch.audits.extend(audits)
        return batch

    def _decide_event(self, stored: StoredEvent, ctx: DecisionContext, counts: DecideCounts
                      ) -> tuple[list[NewEgress], list[Draft]]:
        opened = self.open(stored)
        shared = self._event_part(stored, self.data_subjects(opened), ctx)
        egress: list[NewEgress] = []
        audits: list[Draft] = []
        released = withheld = 0
        decide_one, audit_of = self.decide_one, self._audit
        plans = self.plans.plans_for(opened.schema.name)
        for plan, span_id in zip(plans, _span_ids(len(plans)), strict=True):
            decision = decide_one(plan, stored, opened, ctx)
            audit = audit_of(plan, shared, span_id)
            if isinstance(decision, Release):
                egress.append(self._release(plan, stored, opened, decision, audit, ctx))
                released += 1
            else:
                audit.update(decision="withhold", reason_code=decision.code,
                             reason=decision.reason,
                             fields_withheld=[*plan.fields_released, *plan.fields_withheld])
                audits.append(cast(Draft, audit))  # complete: handed out read-only
                withheld += 1
        counts.released += released
        counts.withheld += withheld
        return egress, audits

    def _failed(self, stored: StoredEvent, exc: Exception, ctx: DecisionContext,
                counts: DecideCounts) -> list[Draft]:
        """Default deny for an event the pipeline cannot process: every plan withholds,
        audited with status ERROR (a technical failure), and the log moves on."""
        reason = f"the event could not be processed ({type(exc).__name__}); nothing released"
        out: list[Draft] = []
        shared = self._event_part(stored, [], ctx)
        for plan in self.plans.plans_for(stored.event_type):
            audit = self._audit(plan, shared)
            audit.update(status="ERROR", decision="withhold", reason_code="processing_error",
                         reason=reason,
                         fields_withheld=[*plan.fields_released, *plan.fields_withheld])
            out.append(cast(Draft, audit))
            counts.withheld += 1
        if not out:
            out.append(draft("decide", trace_id=stored.trace_id, start_ms=ctx.now_ms,
                             **trace.foreign_fields(trace.lenient(stored.foreign_trace)),
                             status="ERROR", decision="withhold",
                             reason_code="processing_error", reason=reason,
                             source=stored.source, event_type=stored.event_type,
                             event_id=stored.event_id, event_offset=stored.offset))
        return out

    def decide_one(self, plan: Plan, stored: StoredEvent, opened: Opened,
                   ctx: DecisionContext) -> Decision:
        """One plan on one opened event: the whole decision, with nothing written."""
        return self._precheck(plan, stored, opened, ctx) or plan.evaluate(opened.record, ctx)

    @staticmethod
    def _precheck(plan: Plan, stored: StoredEvent, opened: Opened,
                  ctx: DecisionContext) -> Decision | None:
        if ctx.now_ms - stored.ingested_ms > plan.retention_days * DAY_MS:
            return Withhold("retention_expired", f"the event is older than the purpose's "
                            f"retention of {plan.retention_days} days")
        if opened.erased and any(
                path == src or path.startswith(src + ".")
                for path in opened.erased for src in plan.fields_released):
            return Withhold("erased", "data the purpose releases was erased (crypto-shredded)")
        return None

    def _personal_outputs(self, plan: Plan) -> dict[str, str]:
        """View field -> event path, for the released fields that hold personal data."""
        key = (plan.event_type, plan.purpose)
        found = self._personal_cache.get(key)
        if found is None:
            personal = set(self.registry.get(plan.event_type).personal_paths)
            found = {f.name: f.source for f in plan.fields if f.source in personal}
            self._personal_cache[key] = found
        return found

    def _release(self, plan: Plan, stored: StoredEvent, opened: Opened, decision: Release,
                 audit: dict[str, Any], ctx: DecisionContext) -> NewEgress:
        payload = plan.view_schema.encode(decision.view)
        audit.update(decision="release", fields_released=list(decision.fields_released),
                     fields_withheld=list(decision.fields_withheld),
                     delivered_commitment=self._commit(payload))
        sealed = self._seal(plan, stored, opened, decision, payload) if self.seal_egress \
            else None
        expires: date | None = plan.expires_after(opened.record) if plan.expires_after \
            else None
        ref: Any = decision.view.get("ref")
        # the release's own span, in a trace of its stream's own: the recipient's
        # processing links to it, and no two streams share a trace id
        outbound = self._stream_trace_id(audit["trace_id"], plan.recipient, plan.purpose)
        audit["detail"] = {**audit["detail"], "outbound_trace_id": outbound}
        return NewEgress(plan.recipient, plan.purpose, stored.event_type, "record", payload,
                         stored.offset, ref if isinstance(ref, str) else None, expires,
                         ctx.now_ms, cast(Draft, audit), sealed_payload=sealed,
                         traceparent=trace.outbound(outbound, audit["span_id"]))

    def _seal(self, plan: Plan, stored: StoredEvent, opened: Opened, decision: Release,
              payload: bytes) -> bytes:
        """The released record as held at rest: its personal fields sealed."""
        personal = {out: src for out, src in self._personal_outputs(plan).items()
                    if src in opened.subjects}
        return self.sealer.seal(
            plan.view_schema, decision.view,
            egress_record_id(plan.recipient, plan.purpose, stored.offset),
            self.sealer.retention_until(stored.event_type, from_millis(stored.ingested_ms)),
            subjects={src: opened.subjects[src] for src in personal.values()},
            personal=personal, encoded=payload)

    @staticmethod
    def _event_part(stored: StoredEvent, subjects: list[dict[str, str]],
                    ctx: DecisionContext) -> dict[str, Any]:
        """The draft fields every decision on one event shares, made once per event: the
        source's trace, and its span as the foreign operation, when it sent a traceparent
        (stored as sent before validation existed: one that does not parse is left out)."""
        caller = trace.lenient(stored.foreign_trace)
        shared: dict[str, Any] = {
            "trace_id": stored.trace_id, "start_time": ctx.now_ms, "end_time": ctx.now_ms,
            **trace.foreign_fields(caller), "data_subjects": subjects,
            "source": stored.source, "event_type": stored.event_type,
            "event_id": stored.event_id, "event_offset": stored.offset}
        if caller is not None:
            shared["detail"] = trace.foreign_detail(caller, trace.party_uri(stored.source))
        return shared

    def _audit(self, plan: Plan, shared: dict[str, Any], span_id: str | None = None
               ) -> dict[str, Any]:
        """The decision's draft: the plan's part made once (by `draft`), the event's part
        once per event (`_event_part`), a span of its own."""
        found = self._audit_base.get(id(plan))
        if found is None:
            found = self._audit_base[id(plan)] = (plan, dict(draft(
                "decide", trace_id="-", start_ms=0, covenant_id=self.covenant_id,
                covenant_version=self.covenant_version, purpose=plan.purpose,
                legal_basis=plan.legal_basis, recipient=plan.recipient,
                policy_hash=plan.policy_hash,
                detail={PROCESSING_ACTIVITY: plan.processing_activity_id})))
        out = found[1].copy()  # built here in steps; handed out read-only
        out.update(shared)
        if "detail" in shared:  # the caller's foreign operation beside the plan's activity
            out["detail"] = {**found[1]["detail"], **shared["detail"]}
        if not out["trace_id"]:
            out["trace_id"] = new_trace_id()
        out["span_id"] = span_id or new_span_id()
        return out
