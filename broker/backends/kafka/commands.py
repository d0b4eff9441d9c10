"""The commands writer: access and control audit entries, control events, expiry tombstones.

Everything a command (consume, control) or an expiry sweep writes goes through one
transactional id, ``<prefix>-commands``, and chains on audit partition N (the last one).
Whoever calls init_transactions() on that id fences every earlier holder, so commands in
separate processes, and the serve member that sweeps expiries, take turns: a fenced
writer re-initialises, re-reads its state and retries.

Which released records already have a tombstone is kept in the compacted topic
``<prefix>expiry`` (key ``recipient/purpose/released_offset``, value the tombstone's
offset), written in the same transaction as the tombstone. Only the commands id writes
it, so after init_transactions() reading it to its end is exact. (Deriving it from the
egress topics would not be: the pipeline's open transactions on those topics hold the
last stable offset back, so a just-committed tombstone behind them can be invisible.)
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from broker.audit.entries import Draft, at_offset
from broker.backends.kafka.chain import AuditChain, Transaction, run_transaction
from broker.backends.kafka.egress import (
    EgressLink,
    egress_headers,
    egress_key,
    egress_value,
    to_egress_record,
)
from broker.backends.kafka.errors import kafka_errors, retrying
from broker.backends.kafka.io import (
    Clients,
    close_quietly,
    read_with_ends,
    take_writer,
    wait_visible,
)
from broker.backends.kafka.topics import Layout
from broker.errors import StorageError
from broker.logs import get_logger
from broker.model.schemas import Schema
from broker.pipeline.port import DecisionBatch, EgressRecord, NewEgress
from broker.policy.control import ControlEvent, ThemeSwitch

T = TypeVar("T")
StreamOffset = tuple[str, str, int]  # (recipient, purpose, offset)


class CommandWriter:
    def __init__(self, clients: Clients, layout: Layout, audit_schema: Schema,
                 link: EgressLink) -> None:
        self.clients = clients
        self.layout = layout
        self.link = link
        cfg = layout.cfg
        self.chain = AuditChain(audit_schema, layout.names.audit, cfg.commands_audit_partition)
        self.producer: KafkaProducer | None = None
        self.reader: KafkaConsumer | None = None  # for the visibility wait only
        self.tombstoned: dict[StreamOffset, int] = {}
        self.expiry_position = 0  # where refresh_tombstoned reads on

    # -- life cycle ----------------------------------------------------------------------
    def open(self) -> None:
        """Take the commands chain (fencing earlier holders) and read its state."""
        if self.producer is not None:
            return
        def recover(reader: KafkaConsumer) -> None:
            self.chain.recover(reader)
            self.tombstoned, self.expiry_position = read_tombstoned(
                reader, self.layout.names.expiry)

        self.producer = take_writer(self.clients, self.layout.cfg.commands_txn_id,
                                    self.layout.all_topics(), "the commands writer",
                                    "commands-state", recover)

    def refresh_tombstoned(self, reader: KafkaConsumer) -> None:
        """Read on in the expiry topic: the partition workers write it too, with each
        retraction of a corrected or withdrawn event (broker/backends/kafka/revisions.py),
        so a record they retracted gets no expiry tombstone or erasure notice after. (A
        retraction still in an open transaction is not seen: the record may then get
        both, each a tombstone of the same key; docs/integrators.md says so.)"""
        found, self.expiry_position = read_tombstoned(reader, self.layout.names.expiry,
                                                      self.expiry_position)
        self.tombstoned.update(found)

    def reset(self) -> None:
        if self.producer is not None:
            close_quietly(self.producer)
        self.producer = None
        self.chain.head = None

    def close(self) -> None:
        self.reset()
        if self.reader is not None:
            with contextlib.suppress(Exception):
                self.reader.close()
            self.reader = None

    def run(self, what: str, body: Callable[[Transaction], T]) -> T:
        """Run body in one transaction of the commands id; on failure re-open and retry.

        Returns once what the body wrote (audit entries and every record whose offset it
        asked for) is visible to read_committed readers: Kafka answers a commit before it
        has written the commit markers, and a command reads its own writes right after
        (consume sweeps, then reads the streams), as it can on the embedded backend.
        """
        cfg = self.layout.cfg
        written: dict[TopicPartition, int] = {}
        tried: list[tuple[Transaction, T]] = []  # the last attempt's transaction and result

        def remembered(tx: Transaction) -> T:
            result = body(tx)
            tried[:] = [(tx, result)]
            return result

        def attempt() -> T:
            self.open()
            assert self.producer is not None
            if tried and tried[0][0].audited and self.chain.head == tried[0][0].head:
                # The last attempt failed after its commit went through (an ambiguous
                # commit): its audit entries are the chain's head now. Do not write again.
                with contextlib.suppress(Exception):
                    tried[0][0].note_audit_offsets()
                written.update(tried[0][0].written)
                return tried[0][1]
            tried.clear()
            written.clear()
            try:
                return run_transaction(self.producer, self.chain, what, remembered, written)
            except BaseException:
                self.reset()  # the next attempt re-initialises and re-reads the state
                raise

        result = retrying(attempt, attempts=cfg.retries, backoff_ms=cfg.retry_backoff_ms)
        if written:  # outside the retries: the commit is done, waiting must not redo it
            self._await_visible(written)
        return result

    def _await_visible(self, written: dict[TopicPartition, int]) -> None:
        if self.reader is None:
            self.reader = self.clients.reader("commands-visible")
        if not wait_visible(self.reader, written):
            log = get_logger(component="kafka-commands")
            log.warning("committed writes not yet visible", partitions=len(written))

    # -- writes ----------------------------------------------------------------------------
    def append_audit(self, drafts: list[Draft]) -> None:
        if drafts:
            self.run("writing audit entries", lambda tx: tx.audit(drafts))

    def append_control(self, event: ControlEvent, audit: Draft,
                       document: bytes | None = None) -> ControlEvent:
        """A control event (and the document it activates) with its audit entry."""
        body_json: dict[str, object] = {
            "kind": event.kind, "name": event.name, "value": event.value,
            "effective_ms": event.effective_ms, "recorded_ms": event.recorded_ms}
        if document is not None:
            body_json["document"] = base64.b64encode(document).decode("ascii")
        value = json.dumps(body_json).encode()

        def body(tx: Transaction) -> int:
            future = tx.send(self.layout.names.control, value, key=event.name.encode(),
                             partition=0)
            offset = tx.offsets([future])[0]
            tx.audit([audit])
            return offset

        return replace(event, seq=self.run("writing a control event", body))

    def write_tombstones(self, batch: DecisionBatch) -> list[EgressRecord]:
        """Write the batch's tombstones that no committed tombstone already covers."""
        names = self.layout.names

        def body(tx: Transaction) -> list[tuple[NewEgress, int]]:
            todo = [eg for eg in batch.egress if eg.tombstone_for is not None
                    and (eg.recipient, eg.purpose, eg.tombstone_for) not in self.tombstoned]
            futures = []
            for eg in todo:  # Kafka tombstones: null value, the ended record's key (its ref)
                topic = names.egress(eg.recipient, eg.purpose)
                futures.append(tx.send(topic, egress_value(eg), key=egress_key(eg),
                                       partition=0, headers=egress_headers(
                                           eg, topic, self.layout.view_of(eg.recipient,
                                                                          eg.purpose),
                                           self.link)))
            offsets = tx.offsets(futures)
            for eg, offset in zip(todo, offsets, strict=True):
                tx.send(names.expiry, str(offset).encode(), partition=0,
                        key=f"{eg.recipient}/{eg.purpose}/{eg.tombstone_for}".encode())
            tx.audit([at_offset(eg.audit, offset)
                      for eg, offset in zip(todo, offsets, strict=True)] + batch.audits)
            return list(zip(todo, offsets, strict=True))

        written = self.run("writing expiry tombstones", body)
        out = []
        for eg, offset in written:
            assert eg.tombstone_for is not None
            self.tombstoned[(eg.recipient, eg.purpose, eg.tombstone_for)] = offset
            out.append(EgressRecord(eg.recipient, eg.purpose, offset, eg.event_type, eg.kind,
                                    eg.payload, eg.event_offset, eg.ref, eg.expires_on,
                                    eg.released_ms))
        return out


class ControlReader:
    """The control topic as ControlEvents (seq = offset); reads on from where it stopped.

    A record's value is JSON: kind, name, value, effective_ms, recorded_ms, and for a
    covenant activation the covenant text (base64) under "document".
    """

    def __init__(self, topic: str) -> None:
        self.tp = TopicPartition(topic, 0)
        self.events: list[ControlEvent] = []
        self.documents: dict[str, bytes] = {}
        self.position = 0

    def refresh(self, reader: KafkaConsumer) -> list[ControlEvent]:
        records, ends = read_with_ends(reader, {self.tp: self.position})
        for record in records[self.tp]:
            try:
                item = json.loads(record.value)
                self.events.append(ControlEvent(
                    str(item["kind"]), str(item["name"]), str(item["value"]),
                    int(item["effective_ms"]), int(item["recorded_ms"]), int(record.offset)))
                if "document" in item:
                    document = base64.b64decode(item["document"], validate=True)
                    self.documents[hashlib.sha256(document).hexdigest()] = document
            except (ValueError, KeyError, TypeError) as exc:
                raise StorageError(f"control topic offset {record.offset}: not a control "
                                   f"event ({type(exc).__name__})") from None
        self.position = ends[self.tp]
        return list(self.events)

    def theme_switches(self) -> list[ThemeSwitch]:
        return [ThemeSwitch(e.name, e.value == "on", e.effective_ms, e.seq)
                for e in self.events if e.kind == "theme"]


class ControlWatch:
    """Whether committed control records arrived past where the reader stopped, without a
    request per question: a read_committed consumer of the control partition keeps a fetch
    open at Kafka, and poll(0) hands over what has arrived. `serve` asks before every
    batch; a ListOffsets round trip each time was ~4 % of its main thread (issue 14)."""

    def __init__(self, clients: Clients, topic: str) -> None:
        self.tp = TopicPartition(topic, 0)
        self.consumer = clients.reader("control-watch")
        self.at = -1  # the watcher's next offset, as far as this class moved it

    def moved(self, read_to: int) -> bool:
        """True when a committed record at or past `read_to` (the reader's position) has
        arrived since the last call; the first call and any call after the reader moved on
        start the watch there."""
        with kafka_errors("watching the control topic"):
            if self.at < 0:
                self.consumer.assign([self.tp])
            if self.at < read_to:
                self.consumer.seek(self.tp, read_to)
                self.at = read_to
            records = self.consumer.poll(timeout_ms=0).get(self.tp, [])
        if records:
            self.at = records[-1].offset + 1
        return bool(records)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.consumer.close()


class ExpiryIndex:
    """Released records of the streams whose records can expire, read on incrementally."""

    def __init__(self, layout: Layout, link: EgressLink) -> None:
        self.layout = layout
        self.link = link
        self.positions = {TopicPartition(layout.names.egress(r, p), 0): 0
                          for r, p in layout.expiring_streams}
        self.records: dict[StreamOffset, EgressRecord] = {}

    def refresh(self, reader: KafkaConsumer) -> None:
        found, ends = read_with_ends(reader, dict(self.positions))
        for tp, records in found.items():
            stream = self.layout.stream_of(tp.topic)
            assert stream is not None
            for record in records:
                egress = to_egress_record(record, *stream, self.link)
                if egress.kind == "record" and egress.expires_on and egress.ref:
                    self.records[(egress.recipient, egress.purpose, egress.offset)] = egress
        self.positions.update(ends)

    def due(self, before: Any, tombstoned: dict[StreamOffset, int]) -> list[EgressRecord]:
        for key in [k for k in self.records if k in tombstoned]:
            del self.records[key]  # done with: it has its tombstone
        return sorted((r for r in self.records.values()
                       if r.expires_on is not None and r.expires_on < before),
                      key=lambda r: (r.recipient, r.purpose, r.offset))


def read_tombstoned(reader: KafkaConsumer, topic: str, start: int = 0
                    ) -> tuple[dict[StreamOffset, int], int]:
    """The expiry topic's entries from `start` (released record -> its tombstone's
    offset), and the offset to read on from."""
    tp = TopicPartition(topic, 0)
    found, ends = read_with_ends(reader, {tp: start})
    out: dict[StreamOffset, int] = {}
    for record in found[tp]:
        recipient, purpose, offset = record.key.decode().rsplit("/", 2)
        out[(recipient, purpose, int(offset))] = int(record.value)
    return out, ends[tp]
