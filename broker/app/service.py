"""The broker's use cases over settings, schemas, covenant, keys and an assembled backend
(broker/app/assembly.py), behind the operations the CLI and the HTTP API offer. Data flows
top to bottom: ingest -> store -> decide -> egress + audit, with expiry sweeps and audited
reads.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cached_property, wraps
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from broker.app.assembly import Backend, Parts, assemble
from broker.audit.access import Accessor
from broker.audit.chain import ChainReport, verify_chain
from broker.audit.entries import PROCESSING_ACTIVITY, Draft, draft, with_subjects
from broker.audit.service import AuditLog, audit_setup
from broker.audit.sqlite_integrated import DB_NAME as INTEGRATED_DB
from broker.audit.verify import AuditReport
from broker.clock import local_date, to_millis
from broker.config import Settings
from broker.crypto.keystore import DataKeyStore, DestroyedKey, fields_detail
from broker.crypto.sealing import Sealer
from broker.errors import BrokerError, InvalidEvent, StorageError, UnknownSourceError
from broker.gcpause import during
from broker.keys import KeyStore, commitment, private_dir
from broker.logs import add_personal_keys, get_logger, scrub
from broker.metrics import BrokerMetrics
from broker.model.json_input import Limits
from broker.model.render import to_json
from broker.model.schemas import SchemaRegistry
from broker.pipeline import corrections, erasure, expiry
from broker.pipeline.core import PipelineRunner, RunReport
from broker.pipeline.decide import DecideCounts, Decider, egress_record_id
from broker.pipeline.port import (
    DecisionSink,
    EgressRecord,
    EventLog,
    IngressReport,
    NewEvent,
    QuarantineNote,
    RevisionLog,
    RevisionReader,
    StoredEvent,
    StoredRevision,
    StoreWriter,
)
from broker.pipeline.signatures import load_source_keys
from broker.pipeline.triage import Oversized, RawInput, Triage
from broker.policy.control import ControlState
from broker.policy.covenant import Covenant, load_covenant, parse_covenant
from broker.policy.decision import DecisionContext
from broker.policy.plan import PlanSet, compile_plans

DECIDER = "decide"
# What the data dir holds under its keys (events, data keys, the Kafka integrated audit).
_DATA_FILES = ("broker.db", "keystore.db", INTEGRATED_DB)

if TYPE_CHECKING:  # the type only: the export module is not loaded for every command
    from broker.audit.export_ldv import ActivityLookup

P = ParamSpec("P")
R = TypeVar("R")


def one_writer(method: Callable[Concatenate[Broker, P], R]) -> Callable[Concatenate[Broker, P], R]:
    """`method` as the data directory's only pipeline writer (`Backend.exclusive`): a step
    that reads before it writes (which ids are stored, the decider's position, what is due
    or was released) must not interleave with another process's."""
    @wraps(method)
    def run(self: Broker, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with self.backend.exclusive():
            return method(self, *args, **kwargs)

    return run


SERVE_DECIDES = ("on the Kafka backend, `ingest` produces to the ingress topics and "
                 "`covenant-broker serve --backend kafka` validates, stores and decides")


@dataclass
class IngestReport:
    source: str
    event_type: str
    accepted: int = 0
    quarantined: list[QuarantineNote] = field(default_factory=list)
    dropped_fields: list[tuple[str, list[str]]] = field(default_factory=list)
    decided: DecideCounts = field(default_factory=DecideCounts)
    tombstones: int = 0
    action: str = "event"  # or "correction", "withdrawal" (broker/pipeline/corrections.py)
    retractions: int = 0  # tombstones with cause rectified or withdrawn


@dataclass(frozen=True)
class ErasureReport:
    """What `subject erase` did: the data keys destroyed and the erasure notices written."""

    destroyed: list[DestroyedKey]
    notices: dict[str, int] = field(default_factory=dict)  # "recipient/purpose" -> notices
    # Records the audit says were released about the person and that no tombstone has
    # closed yet (not expired, not noticed by an earlier erasure).
    releases_open: int = 0

    @property
    def keys_missing(self) -> bool:
        """Released data under this person, yet no data key to destroy: the keys were lost
        or replaced (a restored key store, another subject key), so the erasure may not
        have made anything unreadable. The CLI reports it and exits 1."""
        return self.releases_open > 0 and not self.destroyed


@dataclass(frozen=True)
class PartitionChainsReport:
    """`verify_audit` on a backend that keeps one audit hash chain per partition (Kafka):
    every partition's chain, and the integrated log's tree and checkpoints (it holds what
    the last `audit integrate` sequenced; committed entries beyond that are covered by
    their chains only). `audit verify` also checks each integrated entry against its chain
    (broker/cli/kafka_ops.py)."""

    chains: dict[int, ChainReport]
    integrated: AuditReport | None

    @property
    def problem(self) -> str | None:
        for partition, report in sorted(self.chains.items()):
            if not report.ok:
                return f"audit partition {partition}: {report.problem}"
        if self.integrated is not None and not self.integrated.ok:
            return f"integrated log: {self.integrated.problem}"
        return None

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def entries(self) -> int:
        return sum(report.entries for report in self.chains.values())

    @property
    def head(self) -> str:
        """The head of every chain, by partition ("0:<hash> 1:<hash>")."""
        return " ".join(f"{p}:{r.head}" for p, r in sorted(self.chains.items()))


@dataclass(frozen=True)
class Delivered:
    """A record as a recipient receives it: the consume output line."""

    offset: int
    event_type: str
    purpose: str
    recipient: str
    kind: str
    record: dict[str, Any]
    erased: list[str] = field(default_factory=list)  # fields whose subject was erased
    traceparent: str | None = None  # the broker's span for the record (W3C trace context)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"offset": self.offset, "event_type": self.event_type,
                               "purpose": self.purpose, "recipient": self.recipient,
                               "record": self.record}
        if self.kind == "tombstone":
            out["tombstone"] = True
            out["tombstone_cause"] = self.record.get("cause") or "expired"
        if self.erased:
            out["erased_fields"] = self.erased
        if self.traceparent:
            out["traceparent"] = self.traceparent
        return out


class Broker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = SchemaRegistry(settings.schemas_dir)
        add_personal_keys(path.rsplit(".", 1)[-1] for schema in self.registry.by_name.values()
                          for path in schema.personal_paths)
        self.policy_path = settings.policy_file()
        self.covenant: Covenant = load_covenant(self.policy_path)
        self.policy_sha = hashlib.sha256(self.policy_path.read_bytes()).hexdigest()
        # personal data and keys: the user's alone, 0700 (see broker/keys.py)
        closed = private_dir(settings.data_dir, close_if_open=True)
        # The keys first, before any database exists: a fresh data dir gets all its keys
        # now; one that holds data refuses a missing or replaced key (broker/keys.py).
        self.keys = KeyStore(settings.data_dir / "keys",
                             [settings.data_dir / name for name in _DATA_FILES])
        self.keys.initialise()
        self.plans: PlanSet = compile_plans(self.covenant, self.registry,
                                            self.keys.pseudonym_key, str(self.policy_path))
        self.limits = Limits(settings.limits.max_string_bytes, settings.limits.max_event_bytes,
                             settings.max_clock_skew_s * 1000)
        self.source_keys = load_source_keys(
            {name: source.public_key for name, source in settings.sources.items()},
            self.covenant.sources, self.registry.event_types())
        setup = audit_setup(settings, self.covenant.covenant.id, self.keys,
                            self.registry.get("records.audit_entry"))
        self.backend: Backend = assemble(Parts(settings, self.registry, self.plans, self.keys,
                                               setup))
        self.log: EventLog = self.backend.log
        self.audit: AuditLog | None = self.backend.audit  # the audit log's reading side
        self.data_keys: DataKeyStore = self.backend.data_keys
        self.sealer = Sealer(self.registry, self.data_keys, self.keys.subject_key(),
                             self._retention_by_type(), settings.default_retention_days,
                             self.covenant.zone)
        self.decider = Decider(self.plans, self.registry, self.keys, self.sealer,
                               seal_egress=self.backend.seal_egress)
        self._versions: dict[tuple[str, tuple[tuple[str, int], ...]], Decider] = {}
        self._stored: dict[str, Covenant] = {}  # activated covenant texts by SHA-256
        self.logger = get_logger(covenant=self.covenant.covenant.id,
                                 covenant_version=self.covenant.covenant.version)
        if closed:
            self.logger.warning("data dir was open to others; closed to 0700")
        self.metrics = BrokerMetrics()  # its own registry: see broker/metrics.py

    def close(self) -> None:
        self.backend.close()

    def exclusive(self) -> AbstractContextManager[None]:
        """Hold the data directory's pipeline (see `one_writer`) for a check-then-write of
        the application's own: a covenant activation, a key rotation, a lift."""
        return self.backend.exclusive()

    @property
    def writer(self) -> StoreWriter:
        """The synchronous store writer; a backend without one decides in `serve`."""
        if self.backend.writer is None:
            raise StorageError(SERVE_DECIDES)
        return self.backend.writer

    @property
    def decisions(self) -> DecisionSink:
        if self.backend.decisions is None:
            raise StorageError(SERVE_DECIDES)
        return self.backend.decisions

    def _retention_by_type(self) -> dict[str, int]:
        """The longest retention among the purposes that may use each event type."""
        out: dict[str, int] = {}
        for purpose in self.covenant.purposes.values():
            out[purpose.event_type] = max(out.get(purpose.event_type, 0),
                                          purpose.retention_days)
        return out

    # -- the decision context ---------------------------------------------------------------
    def control_state(self) -> ControlState:
        return ControlState.from_events(self.log.control_events())

    def context(self, now: datetime, control: ControlState | None = None) -> DecisionContext:
        control = control if control is not None else self.control_state()
        return DecisionContext(now, to_millis(now), local_date(now, self.covenant.zone), control)

    # -- covenant versions and key versions -------------------------------------------------
    def active_covenant(self, at_ms: int) -> tuple[Covenant, str]:
        """The covenant in force at `at_ms` and the SHA-256 of its text: the last activation
        before then, else the configured file."""
        activation = self.control_state().covenant_at(at_ms)
        if activation is None:
            return self.covenant, self.policy_sha
        return self.covenant_version(activation.version)

    def activity_lookup(self) -> ActivityLookup:
        """The processing activity of (covenant, version, purpose), from that covenant
        version's text when the broker has it, each version read once: for entries that do
        not carry the URI themselves (the LDV export, the party read API)."""
        versions: dict[int, Covenant | None] = {}

        def lookup(covenant_id: str | None, version: int | None, purpose: str | None
                   ) -> str | None:
            if covenant_id != self.covenant.covenant.id or version is None or purpose is None:
                return None
            if version not in versions:
                try:
                    versions[version] = self.covenant_version(version)[0]
                except BrokerError:
                    versions[version] = None
            covenant = versions[version]
            found = covenant.purposes.get(purpose) if covenant else None
            return found.processing_activity_id if found else None

        return lookup

    def covenant_version(self, version: int) -> tuple[Covenant, str]:
        """A covenant version by number: an activated one from the control log, or the file."""
        for activation in reversed(self.control_state().activations):
            if activation.version == version:
                return self._stored_covenant(activation.sha256), activation.sha256
        if version == self.covenant.covenant.version:
            return self.covenant, self.policy_sha
        raise UnknownSourceError(f"covenant version {version} was never activated; known: "
                                 f"{self._known_versions()}")

    def _known_versions(self) -> str:
        known = {a.version for a in self.control_state().activations}
        known.add(self.covenant.covenant.version)
        return ", ".join(str(v) for v in sorted(known))

    def _stored_covenant(self, sha256: str) -> Covenant:
        # A text is named by its hash, so a parsed one never goes stale; `serve` asks on
        # every batch once a covenant was activated (a control read and a parse each time).
        cached = self._stored.get(sha256)
        if cached is not None:
            return cached
        document = self.log.document(sha256)
        if document is None:
            raise StorageError(f"covenant text {sha256} is missing from the control log")
        cached = self._stored[sha256] = parse_covenant(document.decode("utf-8"),
                                                       f"<covenant {sha256[:12]}>")
        return cached

    def decider_at(self, ctx: DecisionContext, version: int | None = None) -> Decider:
        """The decider for the covenant version and key versions in force at the decision time
        (or for an explicit covenant version, as replay asks)."""
        if version is not None:
            covenant, sha = self.covenant_version(version)
        else:
            activation = ctx.control.covenant_at(ctx.now_ms)
            covenant, sha = ((self.covenant, self.policy_sha) if activation is None else
                             (self._stored_covenant(activation.sha256), activation.sha256))
        key_versions = tuple(sorted((p, ctx.control.key_version(p, ctx.now_ms))
                                    for p in covenant.purposes))
        if sha == self.policy_sha and all(v == 1 for _, v in key_versions):
            return self.decider
        cached = self._versions.get((sha, key_versions))
        if cached is None:
            versions = dict(key_versions)
            plans = compile_plans(covenant, self.registry,
                                  lambda purpose: self.keys.pseudonym_key(purpose,
                                                                          versions[purpose]),
                                  f"<covenant v{covenant.covenant.version}>")
            cached = self._versions[(sha, key_versions)] = Decider(
                plans, self.registry, self.keys, self.sealer,
                seal_egress=self.backend.seal_egress)
        return cached

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

    @during  # a batch: the cyclic collector paused (broker/gcpause.py)
    def ingest(self, source: str, event_type: str,
               inputs: Iterable[tuple[str, bytes | Oversized]],
               now: datetime, signatures: Mapping[str, bytes] | None = None,
               traceparent: str | None = None) -> IngestReport:
        """`signatures`: the source's signature of an input, by its position (see
        broker/pipeline/signatures.py); required for a source with a public key.
        `traceparent`: the W3C trace context of the source's operation that sent these
        inputs, for all of them (broker/audit/trace.py; an invalid one is counted and
        ignored)."""
        event_type = self.resolve_type(source, event_type)
        signatures = signatures or {}
        # Read whole before the pipeline is held: a slow input (a pipe) must not hold up
        # another process's ingest. Triage keeps every input's bytes anyway.
        raws = [RawInput(source, event_type, position, raw, signatures.get(position),
                         traceparent) for position, raw in inputs]
        with self.exclusive():
            return self._ingest(source, event_type, raws, now)

    def _ingest(self, source: str, event_type: str, raws: list[RawInput],
                now: datetime) -> IngestReport:
        now_ms = to_millis(now)
        report = IngestReport(source, event_type)
        result = self.triage.triage(raws, now, self.writer.duplicate_ids)
        report.dropped_fields = [(e.position, e.dropped_fields) for e in result.events
                                 if e.dropped_fields]
        events = [NewEvent(e.event_type, e.source, e.event_id, e.payload, e.trace_id,
                           e.traceparent, e.fresh) for e in result.events]
        quarantined, audits = result.quarantined, result.audits
        self.triage.flush_keys()
        stored = self.writer.append_ingest(events, quarantined, audits, now_ms)
        self.metrics.observe_input(event_type, len(events) + len(quarantined))
        self.metrics.observe_quarantine(q.reason_code for q in quarantined)
        self.metrics.observe_bad_traceparents(result.bad_traceparents)
        self.metrics.observe_audit(len(audits))
        report.accepted = len(events)
        report.quarantined = [q.note() for q in quarantined]
        self.logger.info("ingested", source=source, event_type=event_type,
                         accepted=report.accepted, quarantined=len(quarantined))
        report.decided = self.decide_pending(now, {s.offset: s for s in stored})
        if self.backend.revisions is not None:  # any left by an interrupted revision ingest
            self.apply_revisions(now, report)
        report.tombstones = self.sweep_expiries(now)
        self.destroy_expired_keys(now)
        self.observe_checkpoint()
        return report

    def ingest_settled(self, source: str, event_type: str, lines: Iterable[tuple[int, bytes]],
                       now: datetime, signatures: Mapping[int, bytes] | None = None
                       ) -> IngestReport:
        """Ingest numbered input lines (and their signatures, by line number) and return once
        they are settled: each stored or quarantined, every decision made with its egress
        and audit entries written, the expiry sweep at `now` done. The same call and report
        on every backend (the covenant scenarios run through it on both).

        A backend that decides synchronously does all of it in `ingest`. One whose pipeline
        runs apart from ingest (Kafka) publishes to ingress and runs that pipeline here until
        idle at decision time `now`; its report then covers all the run settled (input
        published before and not yet served, too), and quarantine positions are
        topic:partition:offset instead of "line N".
        """
        publisher, runner = self.backend.ingress, self.backend.runner
        if publisher is None:
            by_line = {f"line {n}": sig for n, sig in (signatures or {}).items()}
            return self.ingest(source, event_type,
                               ((f"line {n}", raw) for n, raw in lines), now, by_line)
        if runner is None:
            raise StorageError(f"backend {self.backend.name}: input is published to ingress "
                               "but this process cannot run the pipeline that decides it; "
                               "run `covenant-broker serve`")
        event_type = self.resolve_type(source, event_type)
        published = publisher.publish(source, event_type, lines, signatures)
        run = self._settle(runner, published, now, "inputs", "ingest")
        return IngestReport(source, event_type, accepted=run.stored,
                            quarantined=list(run.quarantine_notes),
                            dropped_fields=list(run.dropped_fields),
                            decided=DecideCounts(run.stored, run.released, run.withheld),
                            tombstones=run.tombstones)
    def _settle(self, runner: PipelineRunner, published: IngressReport, now: datetime,
                what: str, verb: str) -> RunReport:
        """Run the pipeline here until idle over what was just published; all of it must
        have been consumed by this run."""
        run = runner.run_until_idle(self, now)
        if run.consumed < published.produced:
            # Another member of the consumer group (a running `serve`) holds some ingress
            # partitions: it settles them, and this report would not name them.
            raise StorageError(f"{published.produced} {what} published to {published.topic}, "
                               f"but the pipeline run here consumed {run.consumed}: another "
                               "`covenant-broker serve` of the same group holds part of the "
                               f"ingress; stop it, or {verb} without settling")
        return run

    # -- corrections and withdrawals (AVG art. 19; broker/pipeline/corrections.py) ----------
    @property
    def revision_log(self) -> RevisionLog:
        """The revisions applied in this process (embedded); on Kafka `serve` applies them
        (ingest_revisions_settled publishes and runs it)."""
        if self.backend.revisions is None:
            raise StorageError(f"corrections and withdrawals are applied in this process on "
                               f"the embedded backend only; {SERVE_DECIDES}")
        return self.backend.revisions

    @property
    def revision_reader(self) -> RevisionReader:
        """The stored corrections and withdrawals, on every backend."""
        if self.backend.revision_reader is None:
            raise StorageError(f"backend {self.backend.name} keeps no corrections or "
                               "withdrawals")
        return self.backend.revision_reader

    def ingest_revisions_settled(self, action: str, source: str, event_type: str,
                                 lines: Iterable[tuple[int, bytes | Oversized]],
                                 now: datetime, signatures: Mapping[int, bytes] | None = None,
                                 traceparent: str | None = None) -> IngestReport:
        """Corrections or withdrawals as numbered input lines, returned once settled (as
        ingest_settled does for events): on the embedded backend ingest_revisions; on
        Kafka published to the event type's ingress topic with their `action` header,
        keyed by the event they revise, and the pipeline run here until idle (the report
        covers all that run settled; quarantine positions are topic:partition:offset).
        `traceparent`: as for ingest, the source operation's trace context for all of them."""
        corrections.check_action(action)
        publisher, runner = self.backend.ingress, self.backend.runner
        if publisher is None:
            by_line = {f"line {n}": sig for n, sig in (signatures or {}).items()}
            return self.ingest_revisions(action, source, event_type,
                                         ((f"line {n}", raw) for n, raw in lines), now, by_line,
                                         traceparent)
        if runner is None:
            raise StorageError(f"backend {self.backend.name}: revisions are published to "
                               "ingress but this process cannot run the pipeline that applies "
                               "them; run `covenant-broker serve`")
        event_type = self.resolve_type(source, event_type)
        published = publisher.publish(source, event_type, lines, signatures, traceparent,
                                      action=action)
        run = self._settle(runner, published, now, f"{action}s", "publish")
        return IngestReport(source, event_type, accepted=run.revised,
                            quarantined=list(run.quarantine_notes),
                            dropped_fields=list(run.dropped_fields),
                            decided=DecideCounts(run.stored, run.released, run.withheld),
                            tombstones=run.tombstones, action=action,
                            retractions=run.retractions)

    def ingest_revisions(self, action: str, source: str, event_type: str,
                         inputs: Iterable[tuple[str, bytes | Oversized]], now: datetime,
                         signatures: Mapping[str, bytes] | None = None,
                         traceparent: str | None = None) -> IngestReport:
        """Corrections (each input the whole corrected event, with the original event_id)
        or withdrawals (`{"event_id": ..., "reason": ...}`) of one event type: triaged,
        stored with their audit entries, then applied: every recipient of the event gets
        one retraction and, for a correction the covenant releases, the new record.
        `traceparent`: as for ingest (the revisions, their retractions and corrected
        decisions go on in the source's trace; an invalid one is counted and ignored)."""
        corrections.check_action(action)
        event_type = self.resolve_type(source, event_type)
        signatures = signatures or {}
        raws = [RawInput(source, event_type, position, raw, signatures.get(position),
                         traceparent)
                for position, raw in inputs]  # read whole before the pipeline is held
        with self.exclusive():
            return self._ingest_revisions(action, source, event_type, raws, now)

    def _ingest_revisions(self, action: str, source: str, event_type: str,
                          raws: list[RawInput], now: datetime) -> IngestReport:
        log = self.revision_log
        now_ms = to_millis(now)
        report = IngestReport(source, event_type, action=action)
        self.decide_pending(now)  # the originals are decided before they are revised
        result = corrections.triage_revisions(
            self.triage, self.registry, action, raws, now, log, self._subjects_of)
        self.triage.flush_keys()
        log.append_revisions(result.revisions, result.quarantined, result.audits, now_ms)
        self.metrics.observe_input(event_type, len(result.revisions) + len(result.quarantined))
        self.metrics.observe_quarantine(q.reason_code for q in result.quarantined)
        self.metrics.observe_bad_traceparents(result.bad_traceparents)
        self.metrics.observe_audit(len(result.audits))
        report.accepted = len(result.revisions)
        report.quarantined = [QuarantineNote(q.position, q.reason_code, q.reason)
                              for q in result.quarantined]
        self.logger.info("revisions ingested", action=action, source=source,
                         event_type=event_type, accepted=report.accepted,
                         quarantined=len(result.quarantined))
        self.apply_revisions(now, report)
        report.tombstones = self.sweep_expiries(now)
        self.destroy_expired_keys(now)
        self.observe_checkpoint()
        return report

    @one_writer
    def apply_revisions(self, now: datetime, report: IngestReport | None = None) -> int:
        """Apply every stored revision after the corrections position, one committed batch
        each (a revision sees the records the one before it released); returns them."""
        log = self.revision_log
        ctx = self.context(now)
        schema = self.registry.get("records.tombstone")
        counts = report.decided if report is not None else DecideCounts()
        applied = 0
        while True:
            pending = log.read_revisions(self.decisions.position(corrections.CONSUMER),
                                         self.settings.decide_batch_size)
            if not pending:
                return applied
            for revision in pending:
                original = log.originals(revision.event_type, [revision.event_id])[
                    revision.event_id]
                before = self._version_before(revision, original)
                batch = corrections.apply(
                    revision, original, log.live_records(revision.event_type, original.offset),
                    self.decider_at(ctx), schema, ctx, self._subjects_of(before), counts)
                self.sealer.flush()
                self.decisions.commit_decisions(batch, ctx.now_ms)
                self.metrics.observe_decisions(batch, 1, 0.0)
                applied += 1
                if report is not None:
                    report.retractions += sum(1 for eg in batch.egress
                                              if eg.kind == "tombstone")

    def _version_before(self, revision: StoredRevision, original: StoredEvent) -> StoredEvent:
        """The version of the event its live records were released from: the latest
        correction before `revision`, else the original."""
        return corrections.version_before(revision, self.revision_log.revisions_of(
            revision.event_type, [revision.event_id]), original)

    def _subjects_of(self, stored: StoredEvent) -> list[dict[str, str]]:
        return Decider.data_subjects(self.decider.open(stored))

    def observe_checkpoint(self) -> None:
        """Refresh the checkpoint-age gauge (embedded: one indexed read)."""
        if self.audit is not None:
            latest = self.audit.store.latest_checkpoint()
            self.metrics.observe_checkpoint(latest.signed_ms if latest else None)

    @cached_property
    def triage(self) -> Triage:
        """Raw input to stored-or-quarantined, as both backends do it."""
        return Triage(self.registry, self.limits, self.source_keys, self.sealer,
                      self.keys.commitment_key(), self._covenant_fields(), self.covenant.zone,
                      self.settings.quarantine_retention_days)

    # -- decide -----------------------------------------------------------------------------
    @one_writer
    def decide_pending(self, now: datetime, fresh: Mapping[int, StoredEvent] | None = None
                       ) -> DecideCounts:
        """Decide every stored event after the decider's position, in committed batches.
        `fresh`: the events this call's ingest just stored, by offset, with the plaintext
        they were sealed from; those are decided on it instead of opened again."""
        counts = DecideCounts()
        ctx = self.context(now)
        while True:
            events = self.log.read_store(self.decisions.position(DECIDER),
                                         self.settings.decide_batch_size)
            if not events:
                return counts
            if fresh:  # the row read back is the one stored: same id, same sealed bytes
                events = [f if (f := fresh.get(e.offset)) is not None
                          and f.event_id == e.event_id and f.payload == e.payload else e
                          for e in events]
            started = time.perf_counter()
            batch = self.decider_at(ctx).decide(events, ctx, DECIDER, counts)
            seconds = time.perf_counter() - started
            self.sealer.flush()
            self.decisions.commit_decisions(batch, ctx.now_ms)
            self.metrics.observe_decisions(batch, len(events), seconds)

    @one_writer
    def sweep_expiries(self, now: datetime) -> int:
        ctx = self.context(now)
        due = self.log.expiring(ctx.today)
        if not due:
            return 0
        batch = expiry.tombstones(due, self.decider_at(ctx).plans,
                                  self.registry.get("records.tombstone"),
                                  self.keys.commitment_key(), ctx)
        # LDV: a tombstone names the persons its release named
        batch.egress = [replace(eg, audit=with_subjects(
            eg.audit, self._data_subjects_at([eg.event_offset]))) for eg in batch.egress]
        self.log.write_tombstones(batch, ctx.now_ms)
        self.metrics.observe_decisions(batch, 0, 0.0)  # tombstones: released, kind=tombstone
        return len(batch.egress)

    def _data_subjects_at(self, offsets: Iterable[int]) -> list[dict[str, str]]:
        """Subject pseudonyms of stored events (from the envelope, even after erasure), and
        of their corrections: a record of the event may come from any of its versions."""
        out: list[dict[str, str]] = []
        revisions = self.backend.revision_reader
        events = [stored for offset in sorted(set(offsets))
                  for stored in self.log.read_store(offset - 1, 1)]
        corrected: dict[tuple[str, str], list[StoredRevision]] = {}
        if revisions is not None:  # one look-up per event type (on Kafka a read of a topic)
            for event_type in dict.fromkeys(e.event_type for e in events):
                for r in revisions.revisions_of(event_type, [e.event_id for e in events
                                                             if e.event_type == event_type]):
                    if r.action == corrections.CORRECTION:
                        corrected.setdefault((event_type, r.event_id), []).append(r)
        for stored in events:
            versions = [stored, *(corrections.as_stored(r, stored) for r in
                                  corrected.get((stored.event_type, stored.event_id), ()))]
            for version in versions:
                out.extend(s for s in Decider.data_subjects(self.decider.open(version))
                           if s not in out)
        return out

    # -- egress -----------------------------------------------------------------------------
    def check_recipient(self, recipient: str, purpose: str | None) -> None:
        if recipient not in self.covenant.recipients:
            raise UnknownSourceError(f"unknown recipient {recipient!r}; the covenant lists "
                                     f"{', '.join(self.covenant.recipients)}")
        if purpose is not None and purpose not in self.covenant.purposes:
            raise UnknownSourceError(f"unknown purpose {purpose!r}; the covenant has "
                                     f"{', '.join(self.covenant.purposes)}")

    def render(self, record: EgressRecord) -> Delivered:
        """A delivery as the recipient sees it; sealed fields opened, erased ones null."""
        if self.sealer.is_envelope(record.payload):
            opened = self.sealer.open(record.payload, record_id=egress_record_id(
                record.recipient, record.purpose, record.event_offset))
            return Delivered(record.offset, record.event_type, record.purpose,
                             record.recipient, record.kind, to_json(opened.record),
                             sorted(opened.erased), record.traceparent)
        try:  # a view, or a tombstone (older tombstone versions resolve to the current)
            _, plain = self.registry.decode_single_object(record.payload, ("views", "records"))
        except InvalidEvent as exc:
            raise InvalidEvent(exc.code, f"egress record {record.offset} of {record.recipient}"
                               f"/{record.purpose}: {exc.reason}") from None
        return Delivered(record.offset, record.event_type, record.purpose, record.recipient,
                         record.kind, to_json(plain), traceparent=record.traceparent)

    def consume(self, recipient: str, purpose: str | None, from_offset: int,
                now: datetime, limit: int | None = None,
                who: Accessor | None = None) -> list[Delivered]:
        """Every released record of the recipient (and purpose) from an offset, at most
        `limit` of them; audited with the range actually returned, and with who asked
        and from where (`who`, broker/audit/access.py) when a request did."""
        self.check_recipient(recipient, purpose)
        self.maintain(now)
        now_ms = to_millis(now)
        records = [r for r in self.log.read_egress(recipient, purpose, from_offset)
                   if not self.past_retention(r, now_ms)][:limit]
        delivered = [self.render(r) for r in records]
        purposes = [purpose] if purpose else self.log.streams(recipient)
        ck = self.keys.commitment_key()
        audits = []
        for i, name in enumerate(purposes):
            chunk = [d for d in delivered if d.purpose == name]
            detail = {"from_offset": str(from_offset), "count": str(len(chunk))}
            if who is not None:
                detail.update(who.detail())
            if chunk:
                detail["range"] = f"{chunk[0].offset}-{chunk[-1].offset}"
            lines = b"".join(json.dumps(d.as_json(), sort_keys=True).encode() + b"\n"
                             for d in chunk)
            declared = self.covenant.purposes.get(name)
            if declared is not None:
                detail[PROCESSING_ACTIVITY] = declared.processing_activity_id
            trace_fields = who.trace_fields(first=i == 0) if who else {"trace_id": None}
            audits.append(draft(
                "access", start_ms=now_ms, **trace_fields, recipient=recipient,
                purpose=name, **self._covenant_fields(),
                legal_basis=declared.legal_basis if declared else None,
                data_subjects=self._data_subjects_at(
                    r.event_offset for r in records if r.purpose == name),
                delivered_commitment=commitment(ck, lines), detail=detail))
        self.log.append_audit(audits, now_ms)
        self.metrics.observe_audit(len(audits))
        return delivered

    def past_retention(self, record: EgressRecord, now_ms: int) -> bool:
        """A recipient's stream never carries a record older than its purpose's retention."""
        purpose = self.covenant.purposes.get(record.purpose)
        return purpose is not None and \
            now_ms - record.released_ms > purpose.retention_days * 86_400_000

    # -- time passing -----------------------------------------------------------------------
    @one_writer
    def maintain(self, now: datetime) -> None:
        """What a decision time brings by itself: expiry tombstones and key retention."""
        self.sweep_expiries(now)
        self.destroy_expired_keys(now)

    @one_writer
    def destroy_expired_keys(self, now: datetime) -> list[DestroyedKey]:
        destroyed = self.data_keys.destroy_expired(local_date(now, self.covenant.zone))
        self.sealer.forget(k.key_id for k in destroyed)
        if destroyed:
            self.log.append_audit([draft(
                "retention", trace_id=None, start_ms=to_millis(now), **self._covenant_fields(),
                decision="destroy_keys", reason_code="retention_ended",
                reason="data keys past their retention date were destroyed",
                detail={"keys": str(len(destroyed)), **fields_detail(destroyed),
                        "latest_retention": max(k.retention_until for k in destroyed
                                                ).isoformat()})], to_millis(now))
        return destroyed

    @one_writer
    def erase_subject(self, bsn: str, reason: str, now: datetime) -> ErasureReport:
        """Crypto-shred one person: destroy their data keys, then tell every recipient that
        received a record about them (one erasure notice per record, AVG art. 19); audit
        it all with the keyed pseudonym only."""
        pseudonym = self.sealer.subject_pseudonym("bsn", bsn)
        destroyed = self.data_keys.destroy_subject(f"bsn:{pseudonym}")
        self.sealer.forget(k.key_id for k in destroyed)
        ctx = self.context(now)
        released = self.log.without_tombstone(erasure.released_in(
            self._entries_about(pseudonym), pseudonym))
        releases_open = sum(1 for record in released if record.kind == "record")
        batch = erasure.notices(released, self.decider_at(ctx).plans,
                                self.registry.get("records.tombstone"),
                                self.keys.commitment_key(), ctx)
        # a notice names the persons its release named
        batch.egress = [replace(eg, audit=with_subjects(
            eg.audit, self._data_subjects_at([eg.event_offset]))) for eg in batch.egress]
        batch.audits.append(draft(
            "erasure", trace_id=None, start_ms=ctx.now_ms, **self._covenant_fields(),
            data_subjects=[{"pseudonym": pseudonym, "id_type": "bsn", "role": "erasure"}],
            decision="destroy_keys", reason_code="erasure_request", reason=scrub(reason),
            detail={"keys": str(len(destroyed)), **fields_detail(destroyed),
                    "notices": str(len(batch.egress))}))
        written = self.log.write_tombstones(batch, ctx.now_ms)
        self.metrics.observe_decisions(batch, 0, 0.0)  # notices: released, kind=tombstone
        self.metrics.observe_audit(len(batch.audits))
        notices: dict[str, int] = {}
        for record in written:
            stream = f"{record.recipient}/{record.purpose}"
            notices[stream] = notices.get(stream, 0) + 1
        self.logger.info("subject erased", keys=len(destroyed), notices=len(written),
                         streams=len(notices))
        return ErasureReport(destroyed, notices, releases_open)

    def _entries_about(self, pseudonym: str) -> Iterator[dict[str, Any]]:
        """Audit entries that may name the subject: through the subject index on the
        embedded backend, by a scan of every audit partition on Kafka (its integrated log
        is only as recent as the last `audit integrate`)."""
        schema = self.registry.get("records.audit_entry")
        if self.audit is not None and self.backend.audit_is_live:
            store = self.audit.store
            rows: Iterable[bytes] = (data for _, data in store.audit_entries_at(
                store.subject_seqs(bytes.fromhex(pseudonym))))
        else:
            rows = self.log.audit_entries()
        for data in rows:
            yield schema.decode(data)

    # -- control ----------------------------------------------------------------------------
    def switch_theme(self, theme: str, on: bool, now: datetime) -> None:
        if theme not in self.covenant.themes:
            raise UnknownSourceError(f"unknown theme {theme!r}; the covenant's themes are "
                                     f"{', '.join(self.covenant.themes) or 'none'}")
        audit = draft("control", trace_id=None, start_ms=to_millis(now),
                      **self._covenant_fields(), decision=None,
                      detail={"kind": "theme", "theme": theme, "state": "on" if on else "off"})
        self.log.append_theme_switch(theme, on, to_millis(now), audit, to_millis(now))

    # -- lifecycle of a long-running process -------------------------------------------------
    def record_process(self, name: str, now: datetime) -> None:
        """A `broker_start` or `broker_stop` entry: which build ran under which covenant
        and configuration, so an auditor can tell what code made the entries between.

        Only long-running processes (`web`, `serve`) write these: a short CLI command
        would double the log with start/stop pairs around every ingest or query. (`serve`
        appends its own on a partition chain it writes: broker/backends/kafka/runner.py.)
        """
        self.log.append_audit([self.process_entry(name, now)], to_millis(now))

    def process_entry(self, name: str, now: datetime, trace_id: str | None = None) -> Draft:
        """The draft of a `broker_start` / `broker_stop` entry (one trace_id pairs them)."""
        if name not in ("broker_start", "broker_stop"):
            raise ValueError(f"not a process lifecycle entry: {name}")
        try:
            version = importlib.metadata.version("covenant-broker")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        config = hashlib.sha256(self.settings.model_dump_json().encode("utf-8")).hexdigest()
        return draft(
            name, trace_id=trace_id, start_ms=to_millis(now), **self._covenant_fields(),
            decision=None, policy_hash=self.plans.policy_hash,
            detail={"broker_version": version, "covenant_hash": self.plans.policy_hash,
                    "config_hash": config})

    # -- audit ------------------------------------------------------------------------------
    def verify_audit(self) -> AuditReport | ChainReport | PartitionChainsReport:
        chains = self.backend.partition_chains
        if chains is not None:  # one chain per audit partition, and the log integrating them
            return PartitionChainsReport(chains.verify_audit_partitions(),
                                         self.audit.verify() if self.audit else None)
        if self.audit is not None:  # chain, Merkle tree, checkpoints and their consistency
            return self.audit.verify()
        if self.backend.chain is None:
            raise StorageError("this backend keeps one audit chain per partition; "
                               "`covenant-broker audit verify` checks each of them")
        return verify_chain(self.registry.get("records.audit_entry"),
                            self.backend.chain.audit_rows())
