"""The broker assembled: settings, schemas, covenant, keys and a backend, behind the
operations the CLI (and later the HTTP API) offers. Data flows top to bottom:
ingest -> store -> decide -> egress + audit, with expiry sweeps and audited reads.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from broker.audit.chain import ChainReport, verify_chain
from broker.audit.entries import Draft, draft, new_trace_id
from broker.backends.port import EgressRecord, NewEvent, Quarantined
from broker.backends.sqlite import SqliteEventLog
from broker.clock import local_date, to_millis
from broker.config import Settings
from broker.errors import InvalidEvent, UnknownSourceError
from broker.keys import KeyStore, commitment
from broker.logs import add_personal_keys, get_logger
from broker.model import codec
from broker.model.json_input import Limits
from broker.model.render import to_json
from broker.model.schemas import SchemaRegistry
from broker.pipeline import expiry
from broker.pipeline.decide import DecideCounts, Decider
from broker.pipeline.ingest import Accepted, validate
from broker.policy.control import ControlState
from broker.policy.covenant import Covenant, load_covenant
from broker.policy.decision import DecisionContext
from broker.policy.plan import PlanSet, compile_plans

DECIDER = "decide"


@dataclass
class QuarantineNote:
    position: str
    reason_code: str
    reason: str


@dataclass
class IngestReport:
    source: str
    event_type: str
    accepted: int = 0
    quarantined: list[QuarantineNote] = field(default_factory=list)
    dropped_fields: list[tuple[str, list[str]]] = field(default_factory=list)
    decided: DecideCounts = field(default_factory=DecideCounts)
    tombstones: int = 0


@dataclass(frozen=True)
class Delivered:
    """A record as a recipient receives it: the consume output line."""

    offset: int
    event_type: str
    purpose: str
    recipient: str
    kind: str
    record: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"offset": self.offset, "event_type": self.event_type,
                               "purpose": self.purpose, "recipient": self.recipient,
                               "record": self.record}
        if self.kind == "tombstone":
            out["tombstone"] = True
        return out


class Broker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = SchemaRegistry(settings.schemas_dir)
        add_personal_keys(path.rsplit(".", 1)[-1] for schema in self.registry.by_name.values()
                          for path in schema.personal_paths)
        self.policy_path = settings.policy_file()
        self.covenant: Covenant = load_covenant(self.policy_path)
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.keys = KeyStore(settings.data_dir / "keys")
        self.plans: PlanSet = compile_plans(self.covenant, self.registry,
                                            self.keys.pseudonym_key, str(self.policy_path))
        self.limits = Limits(settings.limits.max_string_bytes, settings.limits.max_event_bytes)
        self.log = SqliteEventLog(settings.data_dir / "broker.db",
                                  self.registry.get("records.audit_entry"))
        self.decider = Decider(self.plans, self.registry, self.keys)
        self.logger = get_logger(covenant=self.covenant.covenant.id,
                                 covenant_version=self.covenant.covenant.version)

    def close(self) -> None:
        self.log.close()

    # -- the decision context ---------------------------------------------------------------
    def context(self, now: datetime) -> DecisionContext:
        control = ControlState.fold(self.log.theme_switches())
        return DecisionContext(now, to_millis(now), local_date(now, self.covenant.zone), control)

    def _covenant_fields(self) -> dict[str, Any]:
        header = self.covenant.covenant
        return {"covenant_id": header.id, "covenant_version": header.version}

    # -- ingest -----------------------------------------------------------------------------
    def resolve_type(self, source: str, event_type: str) -> str:
        """Refuse unknown sources and types before anything is read or stored."""
        if source not in self.covenant.sources:
            raise UnknownSourceError(f"unknown source {source!r}; the covenant's sources are "
                                     f"{', '.join(self.covenant.sources)}")
        full = event_type if "." in event_type else f"{source}.{event_type}"
        if full not in self.registry.event_types():
            raise UnknownSourceError(f"unknown event type {event_type!r}; known types are "
                                     f"{', '.join(sorted(self.registry.event_types()))}")
        return full

    def ingest(self, source: str, event_type: str, inputs: Iterable[tuple[str, bytes]],
               now: datetime) -> IngestReport:
        event_type = self.resolve_type(source, event_type)
        now_ms = to_millis(now)
        report = IngestReport(source, event_type)
        accepted: list[tuple[str, bytes, Accepted]] = []
        quarantined: list[Quarantined] = []
        for position, raw in inputs:
            try:
                ok = validate(raw, source, event_type, self.registry, self.limits)
            except InvalidEvent as bad:
                quarantined.append(Quarantined(source, event_type, position, bad.code,
                                               bad.reason, raw, now_ms))
                continue
            accepted.append((position, raw, ok))
        known = self.log.duplicate_ids(event_type, [a.event_id for _, _, a in accepted])
        events: list[NewEvent] = []
        for position, raw, ok in accepted:
            if ok.event_id in known:
                quarantined.append(Quarantined(
                    source, event_type, position, "duplicate_event",
                    "an event with this event_id is already stored or earlier in this input",
                    raw, now_ms))
                continue
            known.add(ok.event_id)
            if ok.dropped_fields:
                report.dropped_fields.append((position, ok.dropped_fields))
            events.append(NewEvent(event_type, source, ok.event_id, ok.payload,
                                   new_trace_id()))
        audits = [self._quarantine_audit(q) for q in quarantined]
        self.log.append_ingest(events, quarantined, audits, now_ms)
        report.accepted = len(events)
        report.quarantined = [QuarantineNote(q.position, q.reason_code, q.reason)
                              for q in quarantined]
        self.logger.info("ingested", source=source, event_type=event_type,
                         accepted=report.accepted, quarantined=len(quarantined))
        report.decided = self.decide_pending(now)
        report.tombstones = self.sweep_expiries(now)
        return report

    def _quarantine_audit(self, q: Quarantined) -> Draft:
        return draft("quarantine", trace_id=None, start_ms=q.received_ms, source=q.source,
                     event_type=q.declared_type, reason_code=q.reason_code, reason=q.reason,
                     **self._covenant_fields(),
                     detail={"position": q.position, "bytes": str(len(q.raw)),
                             "raw_sha256": hashlib.sha256(q.raw).hexdigest()})

    # -- decide -----------------------------------------------------------------------------
    def decide_pending(self, now: datetime) -> DecideCounts:
        """Decide every stored event after the decider's position, in committed batches."""
        counts = DecideCounts()
        ctx = self.context(now)
        while True:
            events = self.log.read_store(self.log.position(DECIDER),
                                         self.settings.decide_batch_size)
            if not events:
                return counts
            batch = self.decider.decide(events, ctx, DECIDER, counts)
            self.log.commit_decisions(batch, ctx.now_ms)

    def sweep_expiries(self, now: datetime) -> int:
        ctx = self.context(now)
        due = self.log.expiring(ctx.today)
        if not due:
            return 0
        batch = expiry.tombstones(due, self.plans, self.registry.get("records.tombstone"),
                                  self.keys.commitment_key(), ctx)
        self.log.commit_decisions(batch, ctx.now_ms)
        return len(batch.egress)

    # -- egress -----------------------------------------------------------------------------
    def check_recipient(self, recipient: str, purpose: str | None) -> None:
        if recipient not in self.covenant.recipients:
            raise UnknownSourceError(f"unknown recipient {recipient!r}; the covenant lists "
                                     f"{', '.join(self.covenant.recipients)}")
        if purpose is not None and purpose not in self.covenant.purposes:
            raise UnknownSourceError(f"unknown purpose {purpose!r}; the covenant has "
                                     f"{', '.join(self.covenant.purposes)}")

    def render(self, record: EgressRecord) -> Delivered:
        header = codec.split_header(record.payload)
        schema = self.registry.by_fingerprint.get(header[0]) if header else None
        if schema is None:
            raise InvalidEvent("unknown_schema", f"egress record {record.offset} of "
                               f"{record.recipient}/{record.purpose} has an unknown schema")
        return Delivered(record.offset, record.event_type, record.purpose, record.recipient,
                         record.kind, to_json(schema.decode(record.payload)))

    def consume(self, recipient: str, purpose: str | None, from_offset: int,
                now: datetime) -> list[Delivered]:
        """Every released record of the recipient (and purpose) from an offset; audited."""
        self.check_recipient(recipient, purpose)
        self.sweep_expiries(now)
        records = self.log.read_egress(recipient, purpose, from_offset)
        purposes = [purpose] if purpose else self.log.streams(recipient)
        ck = self.keys.commitment_key()
        audits = []
        for name in purposes:
            chunk = [r for r in records if r.purpose == name]
            detail = {"from_offset": str(from_offset), "count": str(len(chunk))}
            if chunk:
                detail["range"] = f"{chunk[0].offset}-{chunk[-1].offset}"
            audits.append(draft(
                "access", trace_id=None, start_ms=to_millis(now), recipient=recipient,
                purpose=name, **self._covenant_fields(),
                delivered_commitment=commitment(ck, b"".join(r.payload for r in chunk)),
                detail=detail))
        self.log.append_audit(audits, to_millis(now))
        return [self.render(r) for r in records]

    # -- control ----------------------------------------------------------------------------
    def switch_theme(self, theme: str, on: bool, now: datetime) -> None:
        if theme not in self.covenant.themes:
            raise UnknownSourceError(f"unknown theme {theme!r}; the covenant's themes are "
                                     f"{', '.join(self.covenant.themes) or 'none'}")
        audit = draft("control", trace_id=None, start_ms=to_millis(now),
                      **self._covenant_fields(), decision=None,
                      detail={"kind": "theme", "theme": theme, "state": "on" if on else "off"})
        self.log.append_theme_switch(theme, on, to_millis(now), audit, to_millis(now))

    # -- audit ------------------------------------------------------------------------------
    def verify_audit(self) -> ChainReport:
        return verify_chain(self.registry.get("records.audit_entry"), self.log.audit_rows())
