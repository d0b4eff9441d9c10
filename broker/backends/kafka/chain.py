"""Per-partition audit hash chains on Kafka, and the transaction that extends one.

The audit topic has N + 1 partitions. Partition p < N is written only by the producer
with transactional id ``<prefix>-<p>`` (the pipeline worker of partition index p);
partition N only by ``<prefix>-commands`` (access, control and expiry entries). One
transactional id per partition means one writer per chain: Kafka fences every older
producer with that id when a new one runs init_transactions(), and completes (commits or
aborts) the older one's open transaction first. So after init_transactions() the last
entry of the last committed record of the partition is the chain head, and nobody else
can append after it:

* a transaction's entries travel in one record, a `records.audit_batch` (several, in
  order, if they would exceed the record size limit; broker/backends/kafka/audit_batch.py),
  sent just before the commit;
* entry.seq is the entry's position among the committed entries of its partition
  (Kafka offsets are not used: a record holds many entries, and transaction markers and
  aborted records occupy offsets);
* entry.prev_hash is the chain hash of the previous committed entry in the partition: its
  RFC 9162 leaf hash, SHA-256(0x00 || entry bytes), in hex (`entries.chain_hash`).

A transaction that aborts leaves no entry behind for read_committed readers, so the chain
continues from the head it started from.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from broker.audit.chain import ChainReport
from broker.audit.entries import GENESIS, Draft, SealedEntry, chain_hash, seal
from broker.backends.kafka.audit_batch import (
    MAX_RECORD_BYTES,
    batch_schema,
    encode_batch,
    last_entry,
    read_partition,
    split,
)
from broker.backends.kafka.errors import kafka_errors
from broker.backends.kafka.io import Header, last_committed, read_all
from broker.errors import AuditIntegrityError
from broker.model.schemas import Schema

T = TypeVar("T")
SEND_TIMEOUT_S = 60.0
# What a record adds to its value in a produce request: the record batch header (61
# bytes), the record's own framing and the seq/count headers; rounded up generously.
RECORD_OVERHEAD = 1024


@dataclass(frozen=True)
class ChainHead:
    next_seq: int
    prev_hash: str


class AuditChain:
    """The chain of one audit partition, as its only writer sees it."""

    def __init__(self, schema: Schema, topic: str, partition: int) -> None:
        self.schema = schema
        self.tp = TopicPartition(topic, partition)
        self.head: ChainHead | None = None

    def recover(self, reader: KafkaConsumer) -> ChainHead:
        """Read the head from the last entry of the last committed record; call after
        init_transactions()."""
        record = last_committed(reader, self.tp)
        if record is None:
            self.head = ChainHead(0, GENESIS)
            return self.head
        seq, data = last_entry(self.schema, record, self.tp.partition)
        self.head = ChainHead(seq + 1, chain_hash(data))
        return self.head

    def seal(self, head: ChainHead, drafts: list[Draft]) -> tuple[list[SealedEntry], ChainHead]:
        logged_ms = int(time.time() * 1000)
        sealed = []
        seq, prev = head.next_seq, head.prev_hash
        for entry in drafts:
            item = seal(self.schema, entry, seq, prev, logged_ms)
            sealed.append(item)
            seq, prev = seq + 1, item.entry_hash
        return sealed, ChainHead(seq, prev)


class Transaction:
    """Sends of one Kafka transaction; audit entries chain on from the writer's head."""

    def __init__(self, producer: KafkaProducer, chain: AuditChain, what: str) -> None:
        if chain.head is None:
            raise AuditIntegrityError(f"audit partition {chain.tp.partition}: head unknown; "
                                      "recover() must run after init_transactions()")
        self.producer = producer
        self.chain = chain
        self.head: ChainHead = chain.head
        self.what = what
        self.audited = 0
        self.written: dict[TopicPartition, int] = {}  # highest offset whose send returned
        self._audit_sends: list[Any] = []
        self._pending: list[SealedEntry] = []  # sealed, sent as batches before the commit

    def send(self, topic: str, value: bytes | None, *, key: bytes | None = None,
             partition: int | None = None, headers: list[Header] | None = None) -> Any:
        with kafka_errors(self.what):
            return self.producer.send(topic, value=value, key=key, partition=partition,
                                      headers=headers or [])

    def flush(self) -> None:
        with kafka_errors(self.what):
            self.producer.flush(timeout=SEND_TIMEOUT_S)

    def offsets(self, futures: list[Any]) -> list[int]:
        """Offsets of sent records; flushes first."""
        self.flush()
        offsets = []
        with kafka_errors(self.what):
            for future in futures:
                meta = future.get(timeout=SEND_TIMEOUT_S)
                tp = TopicPartition(meta.topic, meta.partition)
                self.written[tp] = max(self.written.get(tp, -1), int(meta.offset))
                offsets.append(int(meta.offset))
        return offsets

    def audit(self, drafts: list[Draft]) -> None:
        """Seal entries on the chain; they are sent, with every other entry of the
        transaction, in one batch record just before the commit (`send_audit`)."""
        sealed, self.head = self.chain.seal(self.head, drafts)
        self._pending += sealed
        self.audited += len(sealed)

    def send_audit(self) -> None:
        """The transaction's entries as batch records (one unless they exceed the record
        size limit), in chain order, on the chain's partition."""
        if not self._pending:
            return
        schema = batch_schema(self.chain.schema)
        limit = min(MAX_RECORD_BYTES, _max_request_size(self.producer) - RECORD_OVERHEAD)
        for batch in split(self._pending[0].seq, [e.data for e in self._pending], limit):
            self._audit_sends.append(self.send(
                self.chain.tp.topic, encode_batch(schema, batch),
                partition=self.chain.tp.partition, headers=batch.headers()))
        self._pending = []

    def note_audit_offsets(self) -> None:
        """After the commit (which flushed every send): the audit offsets as written."""
        if self._audit_sends:
            last = self._audit_sends[-1].get(timeout=SEND_TIMEOUT_S)
            self.written[self.chain.tp] = max(self.written.get(self.chain.tp, -1),
                                              int(last.offset))

    def send_offsets(self, offsets: dict[Any, Any], group_metadata: Any) -> None:
        with kafka_errors(self.what):
            self.producer.send_offsets_to_transaction(offsets, group_metadata)


def run_transaction(producer: KafkaProducer, chain: AuditChain, what: str,
                    body: Callable[[Transaction], T],
                    written: dict[TopicPartition, int] | None = None) -> T:
    """Run body inside one transaction; commit, or abort and re-raise.

    The chain head moves only after the commit succeeded. `written` (if given) receives
    the highest offset per partition whose offset the body asked for.
    """
    with kafka_errors(what):
        producer.begin_transaction()
    tx = Transaction(producer, chain, what)
    try:
        result = body(tx)
        tx.send_audit()
        with kafka_errors(what):
            producer.commit_transaction()
    except BaseException:
        abort_quietly(producer)
        raise
    chain.head = tx.head
    if written is not None:
        with contextlib.suppress(Exception):  # informational; the commit is done
            tx.note_audit_offsets()
        written.update(tx.written)
    return result


def abort_quietly(producer: KafkaProducer) -> None:
    """Abort the open transaction if the producer can still do so (a fenced one cannot)."""
    with contextlib.suppress(Exception):  # a fenced or failed producer is replaced anyway
        producer.abort_transaction()


def verify_partitions(reader: KafkaConsumer, schema: Schema, topic: str,
                      partitions: int) -> dict[int, ChainReport]:
    """Verify the chain of every audit partition from its committed batch records."""
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    records = read_all(reader, tps)
    return {tp.partition: read_partition(schema, records[tp]).report for tp in tps}


def _max_request_size(producer: KafkaProducer) -> int:
    config = getattr(producer, "config", None)
    value = config.get("max_request_size") if isinstance(config, dict) else None
    return int(value) if isinstance(value, int) else 1_048_576  # kafka-python's default
