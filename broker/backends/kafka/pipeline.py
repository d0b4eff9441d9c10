"""One partition index of the pipeline: validate, store, decide, release, audit, commit.

A worker owns partition index p of every ingress topic (kafka_group.py), and is the only
writer of store partition p (of every event type), quarantine partition p and audit
partition p, through the transactional id ``<prefix>-<p>``. One batch is one Kafka
transaction holding:

1. the accepted events, on ``store`` partition p, keyed by event_id (their store position,
   offset * N + p, is the event_offset that audit entries and egress records carry);
2. the bad input, on ``quarantine`` partition p;
3. events that arrived on the wrong ingress partition, re-sent keyed by their event_id
   (so a duplicate always meets its original on the same partition);
4. the views the covenant releases, on ``egress.<recipient>.<purpose>``, keyed by their
   ref (broker/backends/kafka/egress.py);
5. one audit entry per quarantine and per (event, recipient, purpose) decision, chained
   on audit partition p;
6. the consumed ingress offsets (send_offsets_to_transaction, with the consumer's group
   metadata, so a member that lost the partition in a rebalance cannot commit them);
7. the batch's corrections and withdrawals (records with an ``action`` header), after its
   events: on ``revisions`` partition p, with their retractions and corrected records on
   the egress topics, the retractions' entries on ``expiry``, and their audit entries
   (broker/backends/kafka/revisions.py).

Either all of it commits or none of it is visible to read_committed readers, and the
offsets move only with it: after a crash the batch is redone from the committed offsets,
and a zombie of the crashed process is fenced by the new owner's init_transactions().

Keys and partitions: ingress records are keyed by event_id (`ingest` does so; a record that
arrives elsewhere is forwarded to ``murmur2(event_id) % N``, the partition Kafka's default
partitioner picks for that key). Store partition = ingress partition = audit partition =
p, so duplicates of one event id are always judged by the same worker, against the store
partition it alone writes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from broker.audit.entries import Draft, at_offset
from broker.backends.kafka.chain import AuditChain, Transaction, run_transaction
from broker.backends.kafka.egress import EgressLink, egress_headers, egress_key, egress_value
from broker.backends.kafka.event_log import KafkaEventLog
from broker.backends.kafka.framing import OVERSIZED_HEADER, oversized_of
from broker.backends.kafka.ingress import event_id_of
from broker.backends.kafka.io import (
    Clients,
    close_quietly,
    header,
    header_bytes,
    headers,
    read_all,
    take_writer,
    wait_visible,
)
from broker.backends.kafka.keys import KafkaKeyStore
from broker.backends.kafka.revisions import (
    ACTION_HEADER,
    PartitionRevisions,
    expiry_key,
    home_partition,
    reader_view,
    revision_headers,
)
from broker.backends.kafka.topics import Layout
from broker.config.kafka import store_position
from broker.errors import TransientBackendError
from broker.pipeline import corrections
from broker.pipeline.core import PipelineCore
from broker.pipeline.decide import DecideCounts, Decider
from broker.pipeline.ingest import source_of
from broker.pipeline.port import (
    DecisionBatch,
    NewEgress,
    Quarantined,
    QuarantineNote,
    StoredEvent,
    StoredRevision,
)
from broker.pipeline.signatures import SIGNATURE_HEADER
from broker.pipeline.triage import RawInput, TriagedEvent
from broker.policy.decision import DecisionContext

CONSUMER = "serve"
UNKNOWN_ACTION = (f"the {ACTION_HEADER} header is neither {' nor '.join(corrections.ACTIONS)}; "
                  "a new event has no such header")


@dataclass
class BatchCounts:
    consumed: int = 0
    stored: int = 0
    quarantined: int = 0
    forwarded: int = 0
    decided: DecideCounts = field(default_factory=DecideCounts)
    # for the metrics, counted by serve once the batch has committed
    decisions: DecisionBatch | None = None
    decide_seconds: float = 0.0
    quarantine_codes: list[str] = field(default_factory=list)
    # what the caller of a settling ingest is told (Broker.ingest_settled), as the embedded
    # ingest tells it: where and why each input was quarantined, the unknown fields dropped
    quarantine_notes: list[QuarantineNote] = field(default_factory=list)
    dropped_fields: list[tuple[str, list[str]]] = field(default_factory=list)
    bad_traceparents: int = 0
    revised: int = 0  # corrections and withdrawals accepted (broker/backends/kafka/revisions.py)
    retractions: int = 0  # tombstones with cause rectified or withdrawn


@dataclass
class _Run:
    """Consecutive corrections or withdrawals on one ingress partition, with no event
    between them: judged together, against what came before the first."""

    topic: str
    action: str
    first_offset: int
    inputs: list[RawInput] = field(default_factory=list)


@dataclass
class _Batch:
    """A batch judged by the core's triage, with what only Kafka does: forwarding."""

    events: list[TriagedEvent] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)  # sealed
    audits: list[Draft] = field(default_factory=list)  # the quarantine records' drafts
    forwards: list[tuple[str, str, Any]] = field(default_factory=list)  # topic, id, record
    offsets: dict[TopicPartition, int] = field(default_factory=dict)  # next offset per tp
    bad_traceparents: int = 0
    runs: list[_Run] = field(default_factory=list)  # corrections and withdrawals, in order
    stored: list[StoredEvent] = field(default_factory=list)  # as _write stored them
    released: list[tuple[NewEgress, int]] = field(default_factory=list)  # with offsets


class PartitionWorker:
    def __init__(self, index: int, broker: PipelineCore, layout: Layout, clients: Clients) -> None:
        self.index = index
        self.broker = broker
        self.layout = layout
        self.clients = clients
        self.chain = AuditChain(broker.registry.get("records.audit_entry"),
                                layout.names.audit, index)
        self.quarantine_schema = broker.registry.get("records.quarantine_entry")
        self.producer: KafkaProducer | None = None
        self.seen: dict[str, set[str]] = {}  # event ids stored on partition p, per type
        self.written: dict[TopicPartition, int] = {}  # last offsets committed, per partition
        log = broker.backend.capability(KafkaEventLog)
        if log is None:
            raise RuntimeError("a partition worker runs on the Kafka backend only")
        self.link: EgressLink = log.link
        self._unsure: tuple[str, Any] | None = None  # (what, head) of an ambiguous append
        # corrections and withdrawals: partition p's state, read when the first arrives
        self.revisions: PartitionRevisions | None = None
        self._revision_reader: KafkaConsumer | None = None

    @property
    def is_open(self) -> bool:
        return self.producer is not None

    def open(self) -> None:
        """Take partition p: fence earlier writers, then read the chain head and the ids."""
        def recover(reader: Any) -> None:
            self.chain.recover(reader)
            self.seen = self._stored_ids(reader)

        self.producer = take_writer(self.clients, self.layout.cfg.partition_txn_id(self.index),
                                    self.layout.all_topics(),
                                    f"the writer of partition {self.index}",
                                    f"recover-{self.index}", recover)

    def close(self) -> None:
        if self.producer is not None:
            close_quietly(self.producer)
        self.producer = None
        self.chain.head = None
        self._drop_revisions()

    def _stored_ids(self, reader: Any) -> dict[str, set[str]]:
        tp = TopicPartition(self.layout.names.store, self.index)
        out: dict[str, set[str]] = {}
        for record in read_all(reader, [tp])[tp]:
            if record.key:
                out.setdefault(header(record, "event_type") or "", set()).add(
                    record.key.decode())
        return out

    def append_audit(self, drafts: list[Draft], what: str) -> None:
        """Entries of their own (serve's broker_start/broker_stop) in one transaction on
        partition p's chain, through this worker's transactional id: no other member of
        the group is fenced, and the chain keeps its one writer. A commit that failed
        ambiguously and whose entries the re-opened chain ends with is not written again.
        """
        if self.producer is None:
            raise RuntimeError(f"partition {self.index}: append_audit() before open()")
        if self._unsure is not None and self._unsure == (what, self.chain.head):
            self._unsure = None
            return
        heads: list[Any] = []

        def body(tx: Transaction) -> None:
            tx.audit(drafts)
            heads.append(tx.head)

        try:
            run_transaction(self.producer, self.chain, f"partition {self.index} {what}", body,
                            self.written)
        except BaseException:
            self._unsure = (what, heads[0]) if heads else None
            raise
        self._unsure = None

    # -- one batch -------------------------------------------------------------------------
    def process(self, batch: dict[TopicPartition, list[Any]], ctx: DecisionContext,
                group_metadata: Any) -> BatchCounts:
        if self.producer is None:
            raise RuntimeError(f"partition {self.index}: process() before open()")
        events, revisions = split_revisions(batch)
        triage = self._triage(events, ctx)
        self._route_revisions(batch, revisions, triage, ctx)
        counts = BatchCounts(consumed=sum(len(r) for r in batch.values()))

        def body(tx: Transaction) -> None:
            self._write(tx, triage, ctx, counts)
            self._write_revisions(tx, triage, ctx, counts)
            tx.send_offsets({tp: OffsetAndMetadata(offset, "", -1)
                             for tp, offset in triage.offsets.items()}, group_metadata)

        try:
            run_transaction(self.producer, self.chain, f"partition {self.index} batch", body,
                            self.written)
        except BaseException:
            self._drop_revisions()  # re-read from what was committed, when needed
            raise
        for event in triage.events:
            self.seen.setdefault(event.event_type, set()).add(event.event_id)
        if self.revisions is not None:
            self.revisions.end_batch()
        return counts

    def _triage(self, batch: dict[TopicPartition, list[Any]], ctx: DecisionContext) -> _Batch:
        out = _Batch()
        inputs: list[RawInput] = []
        by_position: dict[str, tuple[str, Any]] = {}  # position -> (topic, record)
        for tp in sorted(batch, key=lambda t: t.topic):
            records = batch[tp]
            event_type = self.layout.names.event_type_of_ingress(tp.topic)
            for record in records:
                # Only the owner may write an ingress topic (ACLs); a producer that names
                # another source in the header is refused as the embedded ingest does.
                position = f"{tp.topic}:{tp.partition}:{record.offset}"
                by_position[position] = (tp.topic, record)
                value = bytes(record.value or b"")
                over = oversized_of(header_bytes(record, OVERSIZED_HEADER), value)
                inputs.append(RawInput(header(record, "source") or source_of(event_type),
                                       event_type, position, over or value,
                                       header_bytes(record, SIGNATURE_HEADER),
                                       # bytes as sent: a header that is not UTF-8 is a
                                       # bad traceparent, not a crash
                                       header_bytes(record, "traceparent")))
            if records:
                out.offsets[tp] = records[-1].offset + 1
        partitions = self.layout.cfg.partitions
        result = self.broker.triage.triage(
            inputs, ctx.now,
            lambda event_type, ids: {i for i in ids if i in self.seen.get(event_type, ())},
            lambda event_id: home_partition(event_id, partitions) == self.index)
        out.events, out.quarantined, out.audits = (result.events, result.quarantined,
                                                   result.audits)
        out.bad_traceparents = result.bad_traceparents
        for item, event_id in result.elsewhere:  # sent on to the partition that judges it
            topic, record = by_position[item.position]
            out.forwards.append((topic, event_id, record))
        return out

    def _write(self, tx: Transaction, triage: _Batch, ctx: DecisionContext,
               counts: BatchCounts) -> None:
        names, p = self.layout.names, self.index
        self._send_keys()  # the keys sealing at ingest created; acknowledged during the flush
        trace_ids = [e.trace_id for e in triage.events]  # the source's trace if it sent one
        futures = [tx.send(names.store, e.payload, key=e.event_id.encode(), partition=p,
                           headers=headers(event_type=e.event_type, source=e.source,
                                           trace_id=trace, ingress=e.position,
                                           ingested_ms=ctx.now_ms, traceparent=e.traceparent))
                   for e, trace in zip(triage.events, trace_ids, strict=True)]
        self._send_quarantined(tx, triage.quarantined)
        for topic, event_id, record in triage.forwards:
            forwarded = [(k, v) for k, v in record.headers or () if k != "forwarded-from"]
            tx.send(topic, bytes(record.value), key=event_id.encode(), headers=[
                *forwarded, ("forwarded-from", f"{record.partition}:{record.offset}".encode())])
        n = self.layout.cfg.partitions
        # each carries its plaintext (e.fresh): the decision below opens nothing
        stored = [StoredEvent(store_position(offset, p, n), e.event_type, e.source,
                              e.event_id, e.payload, trace, ctx.now_ms, e.traceparent, e.fresh)
                  for e, trace, offset in zip(triage.events, trace_ids, tx.offsets(futures),
                                              strict=True)]
        # The covenant version and pseudonym key versions in force at the decision time.
        started = time.perf_counter()
        decisions = self.broker.decider_at(ctx).decide(stored, ctx, CONSUMER, counts.decided)
        counts.decide_seconds, counts.decisions = time.perf_counter() - started, decisions
        self._send_keys()
        # The view itself, as any Avro library reads it: erasure and expiry end it with a
        # Kafka tombstone and compaction removes it (the store keeps the sealed event).
        released = []
        for eg in decisions.egress:
            topic = names.egress(eg.recipient, eg.purpose)
            released.append(tx.send(
                topic, egress_value(eg), key=egress_key(eg), partition=0,
                headers=egress_headers(eg, topic, self.layout.view_of(eg.recipient,
                                                                      eg.purpose), self.link)))
        drafts: list[Draft] = list(triage.audits)
        triage.stored = stored
        triage.released = list(zip(decisions.egress, tx.offsets(released), strict=True))
        drafts += [at_offset(eg.audit, offset)  # the offset: the last step of a release draft
                   for eg, offset in triage.released]
        drafts += decisions.audits
        # Waits for the acknowledgements of the keys sent above (and sends any others).
        self.broker.triage.flush_keys()
        tx.audit(drafts)
        counts.stored = len(stored)
        counts.quarantined = len(triage.quarantined)
        counts.quarantine_codes = [q.reason_code for q in triage.quarantined]
        counts.quarantine_notes = [q.note() for q in triage.quarantined]
        counts.dropped_fields = [(e.position, e.dropped_fields) for e in triage.events
                                 if e.dropped_fields]
        counts.bad_traceparents = triage.bad_traceparents
        counts.forwarded = len(triage.forwards)

    def _send_quarantined(self, tx: Transaction, quarantined: list[Quarantined]) -> None:
        for q in quarantined:  # sealed by the triage: bad input may be personal
            tx.send(self.layout.names.quarantine, self.quarantine_schema.encode({
                "received_at": q.received_ms, "source": q.source,
                "declared_type": q.declared_type, "position": q.position,
                "reason_code": q.reason_code, "reason": q.reason, "raw": q.raw}),
                partition=self.index, headers=headers(reason_code=q.reason_code))

    def _send_egress(self, tx: Transaction, eg: NewEgress) -> Any:
        """One egress record or tombstone, as every egress write sends it."""
        topic = self.layout.names.egress(eg.recipient, eg.purpose)
        return tx.send(topic, egress_value(eg), key=egress_key(eg), partition=0,
                       headers=egress_headers(eg, topic, self.layout.view_of(eg.recipient,
                                                                             eg.purpose),
                                              self.link))

    # -- corrections and withdrawals (broker/backends/kafka/revisions.py) -----------------
    def _route_revisions(self, batch: dict[TopicPartition, list[Any]],
                         revisions: dict[TopicPartition, list[Any]], triage: _Batch,
                         ctx: DecisionContext) -> None:
        """Forward the revisions that belong to another partition (as events are), group
        the others in runs, quarantine those whose action is neither correction nor
        withdrawal, and move every consumed offset past the revisions too."""
        unknown: list[tuple[RawInput, str, str]] = []
        for tp, records in batch.items():
            if records:
                triage.offsets[tp] = records[-1].offset + 1
        partitions = self.layout.cfg.partitions
        for tp in sorted(revisions, key=lambda t: t.topic):
            ids = {r.offset for r in revisions[tp]}
            event_type = self.layout.names.event_type_of_ingress(tp.topic)
            run: _Run | None = None
            for record in batch[tp]:
                if record.offset not in ids:
                    run = None  # an event between: the next revision sees it stored
                    continue
                value = bytes(record.value or b"")
                event_id = event_id_of(value)
                if event_id and home_partition(event_id, partitions) != self.index:
                    triage.forwards.append((tp.topic, event_id, record))
                    continue
                # bytes as sent: a header that is not UTF-8 is an unknown action, not a crash
                action = (header_bytes(record, ACTION_HEADER) or b"").decode("utf-8", "replace")
                over = oversized_of(header_bytes(record, OVERSIZED_HEADER), value)
                item = RawInput(
                    header(record, "source") or source_of(event_type), event_type,
                    f"{tp.topic}:{tp.partition}:{record.offset}", over or value,
                    header_bytes(record, SIGNATURE_HEADER), header_bytes(record, "traceparent"))
                if action not in corrections.ACTIONS:
                    unknown.append((item, "unknown_action", UNKNOWN_ACTION))
                    continue
                if run is None or run.action != action:
                    run = _Run(tp.topic, action, record.offset)
                    triage.runs.append(run)
                run.inputs.append(item)
        if unknown:
            quarantined, audits = self.broker.triage.quarantine(unknown, ctx.now, triage)
            triage.quarantined += quarantined
            triage.audits += audits

    def _revision_state(self) -> PartitionRevisions:
        """Partition p's revision state, read from the topics the first time (after this
        worker's own commits are visible: a commit returns before its markers are written)."""
        if self.revisions is None:
            if self._revision_reader is None:
                self._revision_reader = self.clients.reader(f"revisions-{self.index}")
            names = self.layout.names
            mine = {tp: offset for tp, offset in self.written.items()  # p's own partitions
                    if tp.partition == self.index
                    and tp.topic in (names.store, names.revisions, names.audit)}
            if mine and not wait_visible(self._revision_reader, mine):
                raise TransientBackendError(f"partition {self.index}: earlier batches not "
                                            "yet visible; reading the revision state later")
            state = PartitionRevisions(self.layout, self.index, self.link,
                                       self.broker.registry.get("records.audit_entry"))
            state.load(self._revision_reader)
            self.revisions = state
        return self.revisions

    def _drop_revisions(self) -> None:
        self.revisions = None
        if self._revision_reader is not None:
            with contextlib.suppress(Exception):
                self._revision_reader.close()
        self._revision_reader = None

    def _write_revisions(self, tx: Transaction, triage: _Batch, ctx: DecisionContext,
                         counts: BatchCounts) -> None:
        """The batch's corrections and withdrawals, after its events: triaged against the
        partition's originals and earlier revisions (this batch's before them included),
        stored, and applied, each seeing what the one before it wrote."""
        if self.revisions is None and not triage.runs:
            return  # no revision seen by this worker yet: nothing to keep up to date
        state = self._revision_state()
        state.add_stored(zip(triage.stored, (e.position for e in triage.events), strict=True))
        state.add_released(triage.released)
        if not triage.runs:
            return
        reader = self._revision_reader
        state.refresh_tombstones(reader)
        view = reader_view(state, reader)
        decider = self.broker.decider_at(ctx)

        def subjects(stored: StoredEvent) -> list[dict[str, str]]:
            return Decider.data_subjects(decider.open(stored))

        drafts: list[Draft] = []
        for run in triage.runs:
            state.cutoff = (run.topic, run.first_offset)
            result = corrections.triage_revisions(self.broker.triage, self.broker.registry,
                                                  run.action, run.inputs, ctx.now, view,
                                                  subjects)
            self._send_quarantined(tx, result.quarantined)
            drafts += result.audits
            counts.quarantined += len(result.quarantined)
            counts.quarantine_codes += [q.reason_code for q in result.quarantined]
            counts.quarantine_notes += [q.note() for q in result.quarantined]
            counts.bad_traceparents += result.bad_traceparents
            self._send_keys()  # the corrected events' data keys, sealed by the triage
            futures = []
            pending = []
            for revision, position in zip(result.revisions, result.positions, strict=True):
                stored = StoredRevision(-1, revision.action, revision.event_type,
                                        revision.source, revision.event_id,
                                        revision.original_offset, revision.payload,
                                        revision.reason, revision.digest, revision.trace_id,
                                        ctx.now_ms, state.last_store, revision.foreign_trace)
                futures.append(tx.send(self.layout.names.revisions, revision.payload,
                                       key=revision.event_id.encode(), partition=self.index,
                                       headers=revision_headers(stored, position)))
                pending.append(stored)
            n = self.layout.cfg.partitions
            for stored, offset in zip(pending, tx.offsets(futures), strict=True):
                applied = replace(stored, seq=store_position(offset, self.index, n))
                state.add_revision(applied)
                drafts += self._apply_revision(tx, applied, state, view, decider, subjects,
                                               ctx, counts)
                counts.revised += 1
        state.cutoff = None
        self.broker.triage.flush_keys()
        tx.audit(drafts)

    def _apply_revision(self, tx: Transaction, revision: StoredRevision,
                        state: PartitionRevisions, view: Any, decider: Decider,
                        subjects: Any, ctx: DecisionContext, counts: BatchCounts
                        ) -> list[Draft]:
        """One revision applied (corrections.apply): a retraction of every live record of
        the event, each with its expiry-topic entry (so no expiry tombstone or erasure
        notice follows), and the corrected record where the covenant releases it."""
        original = view.originals(revision.event_type, [revision.event_id])[revision.event_id]
        before = corrections.version_before(
            revision, state.revisions_of(revision.event_type, [revision.event_id]), original)
        batch = corrections.apply(
            revision, original, state.live_records(self._revision_reader, original.offset),
            decider, self.broker.registry.get("records.tombstone"), ctx, subjects(before),
            counts.decided)
        self._send_keys()
        offsets = tx.offsets([self._send_egress(tx, eg) for eg in batch.egress])
        for eg, offset in zip(batch.egress, offsets, strict=True):
            if eg.kind == "tombstone":
                tx.send(self.layout.names.expiry, str(offset).encode(), partition=0,
                        key=expiry_key(eg))
                counts.retractions += 1
        written = list(zip(batch.egress, offsets, strict=True))
        state.add_released(written)
        if counts.decisions is not None:  # for the metrics and the expiry bookkeeping
            counts.decisions.egress += batch.egress
            counts.decisions.audits += batch.audits
        return [*(at_offset(eg.audit, offset) for eg, offset in written), *batch.audits]

    def _send_keys(self) -> None:
        """Start writing the data keys created so far; their acknowledgement then overlaps
        this transaction's own flushes instead of adding a round trip of its own."""
        keys = self.broker.backend.capability(KafkaKeyStore)
        if keys is not None:
            keys.send_new()


def split_revisions(batch: dict[TopicPartition, list[Any]]
                    ) -> tuple[dict[TopicPartition, list[Any]], dict[TopicPartition, list[Any]]]:
    """(events, corrections and withdrawals) of a batch: a record with an `action` header
    revises an earlier event (broker/backends/kafka/revisions.py)."""
    events: dict[TopicPartition, list[Any]] = {}
    revisions: dict[TopicPartition, list[Any]] = {}
    for tp, records in batch.items():
        events[tp] = [r for r in records if header_bytes(r, ACTION_HEADER) is None]
        found = [r for r in records if header_bytes(r, ACTION_HEADER) is not None]
        if found:
            revisions[tp] = found
    return events, revisions


def group_by_index(records: dict[TopicPartition, list[Any]]
                   ) -> Iterable[tuple[int, dict[TopicPartition, list[Any]]]]:
    by_index: dict[int, dict[TopicPartition, list[Any]]] = {}
    for tp, batch in records.items():
        if batch:
            by_index.setdefault(tp.partition, {})[tp] = batch
    return sorted(by_index.items())
