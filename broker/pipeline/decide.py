"""Decide: every stored event against every plan for its type, under the control state.

Each (event, purpose, recipient) gets exactly one audit entry, released or withheld; a
release also gets its egress record. The caller commits the whole batch atomically with
the consumer position.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from broker.audit.entries import Draft, draft
from broker.backends.port import DecisionBatch, NewEgress, StoredEvent
from broker.keys import KeyStore, commitment, keyed_pseudonym
from broker.model.schemas import Schema, SchemaRegistry
from broker.policy.decision import DecisionContext, Release
from broker.policy.paths import getter
from broker.policy.plan import Plan, PlanSet


@dataclass
class DecideCounts:
    events: int = 0
    released: int = 0
    withheld: int = 0


class Decider:
    def __init__(self, plans: PlanSet, registry: SchemaRegistry, keys: KeyStore) -> None:
        self.plans = plans
        self.registry = registry
        self.subject_key = keys.subject_key()
        self.commitment_key = keys.commitment_key()
        header = plans.covenant.covenant
        self.covenant_id, self.covenant_version = header.id, header.version
        self._subject_getters: dict[str, list[tuple[str, str, Any]]] = {}

    def subjects(self, schema: Schema, event: dict[str, Any]) -> list[dict[str, str]]:
        """Keyed pseudonyms of the data subject identifiers in the event (never the values)."""
        getters = self._subject_getters.get(schema.name)
        if getters is None:
            getters = [(path, kind, getter(path)) for path, kind in schema.subject_paths.items()]
            self._subject_getters[schema.name] = getters
        out = []
        for path, kind, get in getters:
            value = get(event)
            if value:
                out.append({"pseudonym": keyed_pseudonym(self.subject_key, f"{kind}:{value}"),
                            "id_type": kind, "role": path})
        return out

    def decide(self, events: list[StoredEvent], ctx: DecisionContext, consumer: str,
               counts: DecideCounts | None = None) -> DecisionBatch:
        counts = counts if counts is not None else DecideCounts()
        batch = DecisionBatch(consumer=consumer, position=events[-1].offset if events else -1)
        for stored in events:
            schema, event = self.registry.decode_single_object(stored.payload)
            subjects = self.subjects(schema, event)
            counts.events += 1
            for plan in self.plans.plans_for(schema.name):
                decision = plan.evaluate(event, ctx)
                audit = self._audit(plan, stored, subjects, ctx)
                if isinstance(decision, Release):
                    payload = plan.view_schema.encode(decision.view)
                    audit.update(decision="release",
                                 fields_released=list(decision.fields_released),
                                 fields_withheld=list(decision.fields_withheld),
                                 delivered_commitment=commitment(self.commitment_key, payload))
                    expires: date | None = (plan.expires_after(event)
                                            if plan.expires_after else None)
                    ref = decision.view.get("ref")
                    batch.egress.append(NewEgress(
                        plan.recipient, plan.purpose, schema.name, "record", payload,
                        stored.offset, ref if isinstance(ref, str) else None, expires,
                        ctx.now_ms, audit))
                    counts.released += 1
                else:
                    audit.update(decision="withhold", reason_code=decision.code,
                                 reason=decision.reason,
                                 fields_withheld=[*plan.fields_released, *plan.fields_withheld])
                    batch.audits.append(audit)
                    counts.withheld += 1
        return batch

    def _audit(self, plan: Plan, stored: StoredEvent, subjects: list[dict[str, str]],
               ctx: DecisionContext) -> Draft:
        return draft(
            "decide", trace_id=stored.trace_id, start_ms=ctx.now_ms,
            foreign_trace_id=stored.foreign_trace,
            covenant_id=self.covenant_id, covenant_version=self.covenant_version,
            purpose=plan.purpose, legal_basis=plan.legal_basis, recipient=plan.recipient,
            data_subjects=subjects, policy_hash=plan.policy_hash, source=stored.source,
            event_type=stored.event_type, event_id=stored.event_id,
            event_offset=stored.offset)
