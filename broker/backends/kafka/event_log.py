"""The event log port on Kafka, for commands: consume, control, expiry sweeps, verification.

The embedded backend's synchronous pipeline (StoreWriter, DecisionSink) has no counterpart
here, and this class does not declare it: on Kafka, `ingest` publishes to the ingress
topics (IngressPublisher) and `serve` (broker/backends/kafka/runner.py,
broker/backends/kafka/pipeline.py) validates, stores and decides, one transaction per
partition and batch. read_store works: it reads the store topic by store position
(offset * N + partition). The corrections and withdrawals `serve` stored are read here
(RevisionReader: replay and the audit's subject look-ups), from the revisions topic.

Reads are read_committed: a record is visible once its transaction committed, and a
consume reads each stream up to its last stable offset at the time of the read.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import date

from kafka import TopicPartition

from broker.audit.chain import ChainReport
from broker.audit.entries import Draft
from broker.audit.integrate import IntegrationCheck
from broker.audit.sqlite_integrated import IntegratedAuditDb
from broker.backends.kafka.audit_batch import entries_of
from broker.backends.kafka.chain import verify_partitions
from broker.backends.kafka.commands import CommandWriter, ControlReader, ExpiryIndex
from broker.backends.kafka.egress import CAUSES, EgressLink, record_link, to_egress_record
from broker.backends.kafka.errors import kafka_errors, retrying
from broker.backends.kafka.io import Clients, header, last_committed, read_all, read_range
from broker.backends.kafka.purge import purge_once
from broker.backends.kafka.revisions import RevisionIndex, home_partition, stored_event
from broker.backends.kafka.topics import Layout, ensure_topics
from broker.config.kafka import KafkaConfig, split_position, store_position
from broker.logs import get_logger
from broker.model.schemas import SchemaRegistry
from broker.pipeline.ingest import Oversized
from broker.pipeline.port import (
    AuditAppender,
    ControlLog,
    DecisionBatch,
    EgressReader,
    EgressRecord,
    IngressPublisher,
    IngressPurge,
    IngressReport,
    PartitionChains,
    RevisionReader,
    StoredEvent,
    StoredRevision,
    StoreReader,
    TombstoneWriter,
    check_tombstone_batch,
)
from broker.policy.control import ControlEvent, ThemeSwitch
from broker.policy.plan import PlanSet


def open_layout(cfg: KafkaConfig, registry: SchemaRegistry, plans: PlanSet) -> Layout:
    """The deployment's topics, created or checked (retrying while Kafka is unreachable)."""
    layout = Layout.build(cfg, registry.event_types(), plans)
    clients = Clients(cfg)

    def ensure() -> None:
        admin = clients.admin()
        try:
            ensure_topics(admin, layout)
        finally:
            with kafka_errors("closing the admin client"):
                admin.close()

    retrying(ensure, attempts=cfg.retries, backoff_ms=cfg.retry_backoff_ms)
    return layout


class KafkaEventLog(StoreReader, TombstoneWriter, EgressReader, ControlLog, AuditAppender,
                    PartitionChains, IngressPurge, IngressPublisher, RevisionReader):
    def __init__(self, cfg: KafkaConfig, registry: SchemaRegistry, plans: PlanSet,
                 link_key: bytes) -> None:
        """`link_key`: the data dir's egress-link key, which seals what the broker keeps
        about each egress record in its broker_link header (broker/backends/kafka/egress.py)."""
        self.cfg = cfg
        self.layout = open_layout(cfg, registry, plans)
        self.audit_schema = registry.get("records.audit_entry")
        self.link = EgressLink(link_key)
        self.clients = Clients(cfg)
        self.reader = self.clients.reader()
        self.commands = CommandWriter(self.clients, self.layout, self.audit_schema, self.link)
        self.control = ControlReader(self.layout.names.control)
        self.expiry = ExpiryIndex(self.layout, self.link)
        self.revisions = RevisionIndex(self.layout)
        self.logger = get_logger(component="kafka-log", topic_prefix=cfg.topic_prefix)

    def close(self) -> None:
        self.commands.close()
        with kafka_errors("closing the reader"):
            self.reader.close()

    # -- ingress: serve validates, stores and decides ---------------------------------------
    def publish(self, source: str, event_type: str,
                lines: Iterable[tuple[int, bytes | Oversized]],
                signatures: Mapping[int, bytes] | None = None,
                traceparent: str | None = None, action: str | None = None) -> IngressReport:
        # imported here: the producer side pulls in the partition worker's module
        from broker.backends.kafka.ingress import produce  # noqa: PLC0415 - import cycle

        return produce(self, source, event_type, lines, signatures, traceparent, action)

    def purge_consumed_ingress(self) -> int:
        return len(purge_once(self.clients, self.layout))

    def read_store(self, after: int, limit: int) -> list[StoredEvent]:
        """Stored events with a store position after `after`, in position order.

        Positions interleave the partitions (offset * N + partition), so this reads up to
        `limit` records from each partition and keeps the `limit` lowest positions.
        """
        n = self.cfg.partitions
        if limit == 1 and after >= 0:  # the event at position after + 1, if it is one
            offset, partition = split_position(after + 1, n)
            tp = TopicPartition(self.layout.names.store, partition)
            first = read_range(self.reader, {tp: offset}, max_records=1)[tp]
            if first and first[0].offset == offset:
                return [_stored_event(first[0], after + 1)]
        starts = {TopicPartition(self.layout.names.store, p): max(0, (after - p) // n + 1)
                  for p in range(n)}
        found = read_range(self.reader, starts, max_records=limit)
        events = [_stored_event(record, store_position(record.offset, tp.partition, n))
                  for tp, records in found.items() for record in records]
        return sorted(events, key=lambda e: e.offset)[:limit]

    # -- expiry ----------------------------------------------------------------------------
    def expiring(self, before: date) -> list[EgressRecord]:
        """Released records whose basis ended before `before` and that have no tombstone.

        Takes the commands chain first, so the tombstone index it filters by is exact.
        """
        self.commands.open()
        self.commands.refresh_tombstoned(self.reader)  # retractions by the workers too
        self.expiry.refresh(self.reader)
        return self.expiry.due(before, self.commands.tombstoned)

    def earliest_expiry(self) -> date | None:
        """The earliest expiry among the released records the last `expiring` read and
        that have no tombstone yet (None: there are none)."""
        pending = self.expiry.due(date.max, self.commands.tombstoned)
        return min((r.expires_on for r in pending if r.expires_on is not None), default=None)

    def without_tombstone(self, released: list[tuple[str, str, int]]
                          ) -> list[EgressRecord]:
        """Takes the commands chain first, so the tombstone index it filters by is exact
        (write_tombstones filters again inside its transaction)."""
        self.commands.open()
        self.commands.refresh_tombstoned(self.reader)  # retractions by the workers too
        out: list[EgressRecord] = []
        for recipient, purpose, offset in released:
            if (recipient, purpose, offset) in self.commands.tombstoned:
                continue
            tp = TopicPartition(self.layout.names.egress(recipient, purpose), 0)
            found = read_range(self.reader, {tp: offset}, max_records=1).get(tp, [])
            if found and found[0].offset == offset:
                record = to_egress_record(found[0], recipient, purpose, self.link)
                if record.kind == "record":
                    out.append(record)
        return out

    def write_tombstones(self, batch: DecisionBatch, now_ms: int) -> list[EgressRecord]:
        check_tombstone_batch(batch)
        self.logger.info("writing expiry tombstones", due=len(batch.egress))
        self.commands.open()
        self.commands.refresh_tombstoned(self.reader)  # retractions by the workers too
        return self.commands.write_tombstones(batch)

    # -- egress ----------------------------------------------------------------------------
    def _purposes(self, recipient: str) -> list[str]:
        return sorted(p for r, p in self.layout.streams if r == recipient)

    def read_egress(self, recipient: str, purpose: str | None,
                    from_offset: int) -> list[EgressRecord]:
        purposes = [purpose] if purpose is not None else self._purposes(recipient)
        known = set(self._purposes(recipient))
        starts = {TopicPartition(self.layout.names.egress(recipient, p), 0): from_offset
                  for p in purposes if p in known}
        found = read_range(self.reader, starts)
        out: list[EgressRecord] = []
        for name in purposes:
            tp = TopicPartition(self.layout.names.egress(recipient, name), 0)
            records = found.get(tp, [])
            # A record an erasure tombstone ends is what compaction removes: not delivered
            # again meanwhile (its view is in clear; the embedded backend shows such a
            # record with its erased fields null). A tombstone always follows its record,
            # so reading on to the end finds it.
            erased = {record_link(r, self.link).tombstone_for for r in records
                      if r.value is None and header(r, "cause") == CAUSES["erasure"]}
            out.extend(to_egress_record(r, recipient, name, self.link) for r in records
                       if r.offset not in erased)
        return out

    def streams(self, recipient: str) -> list[str]:
        """The recipient's purposes whose stream holds at least one committed record."""
        return [p for p in self._purposes(recipient) if last_committed(
            self.reader, TopicPartition(self.layout.names.egress(recipient, p), 0))]

    # -- control ---------------------------------------------------------------------------
    def append_theme_switch(self, theme: str, on: bool, effective_ms: int,
                            audit: Draft, now_ms: int) -> ThemeSwitch:
        event = self.commands.append_control(
            ControlEvent("theme", theme, "on" if on else "off", effective_ms, now_ms), audit)
        return ThemeSwitch(theme, on, effective_ms, event.seq)

    def theme_switches(self) -> list[ThemeSwitch]:
        self.control.refresh(self.reader)
        return self.control.theme_switches()

    def append_control(self, event: ControlEvent, audit: Draft,
                       document: bytes | None = None) -> ControlEvent:
        return self.commands.append_control(event, audit, document)

    def control_events(self) -> list[ControlEvent]:
        return self.control.refresh(self.reader)

    def document(self, sha256: str) -> bytes | None:
        self.control.refresh(self.reader)
        return self.control.documents.get(sha256)

    # -- audit -----------------------------------------------------------------------------
    def append_audit(self, audits: list[Draft], now_ms: int) -> None:
        self.commands.append_audit(audits)

    def audit_entries(self) -> Iterator[bytes]:
        tps = [TopicPartition(self.layout.names.audit, p)
               for p in range(self.cfg.audit_partitions)]
        for tp, records in sorted(read_all(self.reader, tps).items()):
            yield from entries_of(self.audit_schema, records, tp.partition)

    def check_integrated(self, store: IntegratedAuditDb) -> IntegrationCheck:
        # the integrator reads this log's chains: imported here, it imports this module
        from broker.backends.kafka.audit_integrator import check_integrated  # noqa: PLC0415

        return check_integrated(self, store)

    def verify_audit_partitions(self) -> dict[int, ChainReport]:
        return verify_partitions(self.reader, self.audit_schema, self.layout.names.audit,
                                 self.cfg.audit_partitions)

    # -- corrections and withdrawals (written by serve: broker/backends/kafka/revisions.py)
    def read_revisions(self, after: int, limit: int) -> list[StoredRevision]:
        self.revisions.refresh(self.reader)
        return self.revisions.after(after, limit)

    def revisions_of(self, event_type: str, event_ids: list[str]) -> list[StoredRevision]:
        self.revisions.refresh(self.reader)
        return self.revisions.of(event_type, event_ids)

    def originals(self, event_type: str, event_ids: list[str]) -> dict[str, StoredEvent]:
        """Each event's home store partition read in full (keyed by event_id, no index):
        for tools and tests. Replay and the subject look-ups find an original by the
        store position its revisions name."""
        by_partition: dict[int, set[str]] = {}
        for event_id in event_ids:
            by_partition.setdefault(home_partition(event_id, self.cfg.partitions),
                                    set()).add(event_id)
        out: dict[str, StoredEvent] = {}
        tps = {TopicPartition(self.layout.names.store, p): ids
               for p, ids in by_partition.items()}
        for tp, records in read_all(self.reader, tps).items():
            for record in records:
                key = record.key.decode() if record.key else ""
                if key in tps[tp] and header(record, "event_type") == event_type:
                    out[key] = _stored_event(record, store_position(
                        record.offset, tp.partition, self.cfg.partitions))
        return out

    def quarantine_count(self) -> int:
        tps = [TopicPartition(self.layout.names.quarantine, p)
               for p in range(self.cfg.partitions)]
        return sum(len(records) for records in read_all(self.reader, tps).values())


_stored_event = stored_event  # a store record as the port's StoredEvent
