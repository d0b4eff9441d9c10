"""Corrections and withdrawals on Kafka (AVG art. 19); the rules are broker/pipeline/corrections.py.

A source publishes a correction (the whole corrected event) or a withdrawal
(``{"event_id": ..., "reason": ...}``) on the event type's ingress topic, with the header
``action: correction`` or ``action: withdrawal``, keyed by the original event_id: it lands
on the original's home partition, whose worker judges it (a record elsewhere is forwarded,
as events are). The worker (broker/backends/kafka/pipeline.py) triages it with
`corrections.triage_revisions` against the partition's stored originals and earlier
revisions, and applies an accepted one with `corrections.apply`, all inside the batch's
transaction: the revision on ``<prefix>revisions`` partition p, each live record's
retraction (a Kafka tombstone, cause header rectified/withdrawn) on its egress topic with
its entry on ``<prefix>expiry`` (so no expiry tombstone or erasure notice follows it), the
corrected record where the covenant releases it, the audit entries, the ingress offsets.

Why a topic of its own rather than the store with an ``action`` header: the store holds one
record per event id and its offsets are the events' store positions; every reader of the
store (the `seen` recovery, read_store, replay, the exactly-once checks) relies on that, as
the embedded store's UNIQUE (event_type, event_id) does, and the embedded backend keeps its
revisions in a table beside the store for the same reason. A revision's seq is its position
on the revisions topic (offset * N + partition, as a store position).

A revision record: key the event_id, value the sealed corrected event (empty for a
withdrawal), headers action, event_type, source, original_offset, digest, trace_id,
ingested_ms, after_store_offset, ingress, traceparent (the source's, if it sent a
valid one), and reason (the withdrawal's reason, which is
the source's text: the audit keeps it scrubbed, this topic as the embedded table does).

`PartitionRevisions` is what the worker of partition p knows about its events' revisions,
read from the topics the first time a revision arrives (a partition that never sees one
never pays for it) and kept up to date by the worker's own batches: the store positions
of its events, its revisions, which records of its events were released (from its audit
partition, which only it writes), and which released records have a tombstone (the
expiry topic). A worker that closes (rebalance, crash, failed batch) drops it; the next
one reads it again from what was committed, so a redone batch sees exactly the state
before it and writes no second retraction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.partitioner.default import murmur2

from broker.backends.kafka.audit_batch import entries_of
from broker.backends.kafka.commands import read_tombstoned
from broker.backends.kafka.egress import EgressLink, to_egress_record
from broker.backends.kafka.io import (
    header,
    headers,
    read_all,
    read_range,
    read_with_ends,
    wait_visible,
)
from broker.backends.kafka.topics import Layout
from broker.config.kafka import split_position, store_position
from broker.errors import TransientBackendError
from broker.model.schemas import Schema
from broker.pipeline.port import EgressRecord, NewEgress, StoredEvent, StoredRevision

ACTION_HEADER = "action"
StreamOffset = tuple[str, str, int]  # (recipient, purpose, egress offset)


def home_partition(event_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives the key `event_id`."""
    return int(murmur2(event_id.encode("utf-8")) & 0x7FFFFFFF) % partitions


def revision_headers(revision: StoredRevision, ingress: str) -> list[tuple[str, bytes]]:
    return [*headers(action=revision.action, event_type=revision.event_type,
                     source=revision.source, original_offset=revision.original_offset,
                     digest=revision.digest or None, trace_id=revision.trace_id,
                     ingested_ms=revision.ingested_ms,
                     after_store_offset=revision.after_store_offset, ingress=ingress,
                     traceparent=revision.foreign_trace),
            ("reason", revision.reason.encode("utf-8"))]


def to_revision(record: Any, partitions: int) -> StoredRevision:
    return StoredRevision(
        store_position(int(record.offset), int(record.partition), partitions),
        header(record, ACTION_HEADER) or "", header(record, "event_type") or "",
        header(record, "source") or "", record.key.decode() if record.key else "",
        int(header(record, "original_offset") or -1), bytes(record.value or b""),
        header(record, "reason") or "", header(record, "digest") or "",
        header(record, "trace_id") or "", int(header(record, "ingested_ms") or 0),
        int(header(record, "after_store_offset") or -1),
        header(record, "traceparent"))  # none on a revision stored before trace context


def stored_event(record: Any, position: int) -> StoredEvent:
    """A store record as a StoredEvent (its headers as the worker writes them)."""
    return StoredEvent(position, header(record, "event_type") or "",
                       header(record, "source") or "",
                       record.key.decode() if record.key else "", bytes(record.value),
                       header(record, "trace_id") or "",
                       int(header(record, "ingested_ms") or 0), header(record, "traceparent"))


def expiry_key(eg: NewEgress) -> bytes:
    """The expiry topic's key of the released record a tombstone ends."""
    return f"{eg.recipient}/{eg.purpose}/{eg.tombstone_for}".encode()


class RevisionIndex:
    """Every partition's revisions, read on incrementally (KafkaEventLog's RevisionReader:
    replay and the audit's subject look-ups)."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        n = layout.cfg.partitions
        self.positions = {TopicPartition(layout.names.revisions, p): 0 for p in range(n)}
        self.all: list[StoredRevision] = []
        self.of_event: dict[tuple[str, str], list[StoredRevision]] = {}

    def refresh(self, reader: KafkaConsumer) -> None:
        found, ends = read_with_ends(reader, dict(self.positions))
        fresh = [to_revision(r, self.layout.cfg.partitions)
                 for records in found.values() for r in records]
        if fresh:
            self.all = sorted([*self.all, *fresh], key=lambda r: r.seq)
            for revision in sorted(fresh, key=lambda r: r.seq):
                self.of_event.setdefault((revision.event_type, revision.event_id),
                                         []).append(revision)
        self.positions.update(ends)

    def after(self, seq: int, limit: int) -> list[StoredRevision]:
        return [r for r in self.all if r.seq > seq][:limit]

    def of(self, event_type: str, event_ids: Iterable[str]) -> list[StoredRevision]:
        out = [r for i in dict.fromkeys(event_ids)
               for r in self.of_event.get((event_type, i), ())]
        return sorted(out, key=lambda r: r.seq)


@dataclass
class PartitionRevisions:
    """Partition p's originals, revisions, releases and tombstones (see the module doc):
    what `corrections.triage_revisions` judges against (through `reader_view`), and the
    live records `corrections.apply` retracts. The worker adds its batch's events and releases as it
    writes them, so a revision sees what came before it in the same batch."""

    layout: Layout
    index: int
    link: EgressLink
    audit_schema: Schema
    loaded: bool = False
    positions: dict[tuple[str, str], int] = field(default_factory=dict)  # (type, id) -> pos
    pending: dict[int, StoredEvent] = field(default_factory=dict)  # this process's events
    revisions: dict[tuple[str, str], list[StoredRevision]] = field(default_factory=dict)
    releases: dict[int, list[StreamOffset]] = field(default_factory=dict)  # by store pos
    records: dict[StreamOffset, EgressRecord] = field(default_factory=dict)  # written here
    tombstoned: set[StreamOffset] = field(default_factory=set)
    expiry_position: int = 0
    last_store: int = -1  # the highest store position of partition p
    # the ingress position (topic, offset) a revision being judged came from: only the
    # batch's events from before it on that topic count as stored for it
    cutoff: tuple[str, int] | None = None
    _visible_from: dict[int, tuple[str, int]] = field(default_factory=dict)

    def load(self, reader: KafkaConsumer) -> None:
        """Read the partition's state from the committed topics (the caller has waited
        until its own commits are visible)."""
        names, p, n = self.layout.names, self.index, self.layout.cfg.partitions
        store = TopicPartition(names.store, p)
        for record in read_all(reader, [store])[store]:
            position = store_position(int(record.offset), p, n)
            if record.key:
                self.positions[(header(record, "event_type") or "", record.key.decode())] = \
                    position
            self.last_store = max(self.last_store, position)
        revisions = TopicPartition(names.revisions, p)
        for record in read_all(reader, [revisions])[revisions]:
            revision = to_revision(record, n)
            self.revisions.setdefault((revision.event_type, revision.event_id),
                                      []).append(revision)
        audit = TopicPartition(names.audit, p)
        for data in entries_of(self.audit_schema, read_all(reader, [audit])[audit], p):
            entry = self.audit_schema.decode(data)
            if entry.get("name") == "decide" and entry.get("decision") == "release" \
                    and entry.get("egress_offset") is not None \
                    and entry.get("event_offset") is not None:
                self.releases.setdefault(int(entry["event_offset"]), []).append(
                    (str(entry["recipient"]), str(entry["purpose"]),
                     int(entry["egress_offset"])))
        self.refresh_tombstones(reader)
        self.loaded = True

    def refresh_tombstones(self, reader: KafkaConsumer) -> None:
        """Tombstones written since (expiry sweeps and erasure notices by the commands
        writer, retractions by any worker)."""
        found, self.expiry_position = read_tombstoned(reader, self.layout.names.expiry,
                                                      self.expiry_position)
        self.tombstoned.update(found)

    # -- the batch in hand -----------------------------------------------------------------
    def add_stored(self, events: Iterable[tuple[StoredEvent, str]]) -> None:
        """Events the batch stores, with their ingress positions ("topic:partition:offset")."""
        for event, position in events:
            self.positions[(event.event_type, event.event_id)] = event.offset
            # without its plaintext (`fresh`): held for later revisions, it is the stored
            # (sealed) event, opened when one comes
            self.pending[event.offset] = replace(event, fresh=None)
            self.last_store = max(self.last_store, event.offset)
            topic, _, offset = position.rpartition(":")
            self._visible_from[event.offset] = (topic.rpartition(":")[0], int(offset))

    def add_released(self, egress: Iterable[tuple[NewEgress, int]]) -> None:
        """Egress records the batch writes, with their offsets: releases become live,
        tombstones end the record they name."""
        for eg, offset in egress:
            if eg.kind == "tombstone" and eg.tombstone_for is not None:
                self.tombstoned.add((eg.recipient, eg.purpose, eg.tombstone_for))
                continue
            key = (eg.recipient, eg.purpose, offset)
            self.releases.setdefault(eg.event_offset, []).append(key)
            self.records[key] = EgressRecord(eg.recipient, eg.purpose, offset, eg.event_type,
                                             eg.kind, b"", eg.event_offset, eg.ref,
                                             eg.expires_on, eg.released_ms, eg.traceparent)

    def add_revision(self, revision: StoredRevision) -> None:
        self.revisions.setdefault((revision.event_type, revision.event_id),
                                  []).append(revision)

    # -- what triage_revisions reads (through reader_view) ---------------------------------
    def revisions_of(self, event_type: str, event_ids: list[str]) -> list[StoredRevision]:
        return sorted((r for i in dict.fromkeys(event_ids)
                       for r in self.revisions.get((event_type, i), ())),
                      key=lambda r: r.seq)

    def originals_from(self, reader: KafkaConsumer, event_type: str,
                       event_ids: list[str]) -> dict[str, StoredEvent]:
        out: dict[str, StoredEvent] = {}
        n, store = self.layout.cfg.partitions, self.layout.names.store
        for event_id in dict.fromkeys(event_ids):
            position = self.positions.get((event_type, event_id))
            if position is None or not self._visible(position):
                continue
            event = self.pending.get(position)
            if event is None:
                offset, partition = split_position(position, n)
                tp = TopicPartition(store, partition)
                found = read_range(reader, {tp: offset}, max_records=1)[tp]
                if not found or found[0].offset != offset:
                    continue
                event = stored_event(found[0], position)
            out[event_id] = event
        return out

    def _visible(self, position: int) -> bool:
        """Whether a revision being judged (`cutoff`) comes after the event at `position`:
        an event of the batch in hand counts only if it came before it on its topic."""
        came = self._visible_from.get(position)
        if came is None or self.cutoff is None or came[0] != self.cutoff[0]:
            return True
        return came[1] < self.cutoff[1]

    def end_batch(self) -> None:
        """The batch committed: its events are stored like any other."""
        self._visible_from.clear()
        self.pending.clear()
        self.cutoff = None

    # -- live records, for apply -----------------------------------------------------------
    def live_records(self, reader: KafkaConsumer, event_offset: int) -> list[EgressRecord]:
        """The released records of the event at `event_offset` that no tombstone ends yet,
        in (recipient, purpose, offset) order as the embedded backend gives them."""
        out: list[EgressRecord] = []
        for key in sorted(self.releases.get(event_offset, ())):
            if key in self.tombstoned:
                continue
            record = self.records.get(key)
            if record is None:
                recipient, purpose, offset = key
                tp = TopicPartition(self.layout.names.egress(recipient, purpose), 0)
                # Other workers write the stream too: their open transactions can hold its
                # last stable offset below this committed record for a moment. Wait for it
                # rather than take it for gone.
                if not wait_visible(reader, {tp: offset}):
                    raise TransientBackendError(
                        f"egress {recipient}/{purpose} offset {offset}: not readable yet; "
                        "the batch is retried")
                found = read_range(reader, {tp: offset}, max_records=1).get(tp, [])
                if not found or found[0].offset != offset:
                    continue  # gone past the purpose's retention
                record = to_egress_record(found[0], recipient, purpose, self.link)
            if record.kind == "record":
                out.append(record)
        return out


class _Originals:
    """PartitionRevisions with its reader, as the RevisionReader triage takes."""

    def __init__(self, state: PartitionRevisions, reader: KafkaConsumer) -> None:
        self.state = state
        self.reader = reader

    def read_revisions(self, after: int, limit: int) -> list[StoredRevision]:
        found = sorted((r for rs in self.state.revisions.values() for r in rs
                        if r.seq > after), key=lambda r: r.seq)
        return found[:limit]

    def revisions_of(self, event_type: str, event_ids: list[str]) -> list[StoredRevision]:
        return self.state.revisions_of(event_type, event_ids)

    def originals(self, event_type: str, event_ids: list[str]) -> dict[str, StoredEvent]:
        return self.state.originals_from(self.reader, event_type, event_ids)


def reader_view(state: PartitionRevisions, reader: KafkaConsumer) -> _Originals:
    return _Originals(state, reader)
