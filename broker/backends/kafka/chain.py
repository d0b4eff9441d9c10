"""Per-partition audit hash chains on Kafka, and the transaction that extends one.

The audit topic has N + 1 partitions. Partition p < N is written only by the producer
with transactional id ``<prefix>-<p>`` (the pipeline worker of partition index p);
partition N only by ``<prefix>-commands`` (access, control and expiry entries). One
transactional id per partition means one writer per chain: Kafka fences every older
producer with that id when a new one runs init_transactions(), and completes (commits or
aborts) the older one's open transaction first. So after init_transactions() the last
committed record of the partition is the chain head, and nobody else can append after it:

* entry.seq is the entry's position among the committed records of its partition
  (Kafka offsets are not used: transaction markers and aborted records occupy offsets);
* entry.prev_hash is the chain hash of the previous committed entry in the partition: its
  RFC 9162 leaf hash, SHA-256(0x00 || entry bytes), in hex (`entries.chain_hash`).

A transaction that aborts leaves no entry behind for read_committed readers, so the chain
continues from the head it started from.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from broker.audit.chain import ChainReport, verify_chain
from broker.audit.entries import GENESIS, Draft, SealedEntry, chain_hash, seal
from broker.backends.kafka.errors import kafka_errors
from broker.backends.kafka.io import Header, last_committed, read_all
from broker.errors import AuditIntegrityError
from broker.model.schemas import Schema

T = TypeVar("T")
SEND_TIMEOUT_S = 60.0


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
        """Read the head from the last committed entry; call after init_transactions()."""
        record = last_committed(reader, self.tp)
        if record is None:
            self.head = ChainHead(0, GENESIS)
            return self.head
        try:
            seq = int(self.schema.decode(record.value)["seq"])
        except Exception as exc:  # noqa: BLE001 - any decode failure means a damaged log
            raise AuditIntegrityError(
                f"audit partition {self.tp.partition}: the last entry (offset "
                f"{record.offset}) does not decode ({type(exc).__name__}); refusing to "
                "extend a damaged chain") from None
        self.head = ChainHead(seq + 1, chain_hash(record.value))
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

    def audit(self, drafts: list[Draft], key: bytes | None = None) -> None:
        sealed, self.head = self.chain.seal(self.head, drafts)
        for entry in sealed:
            self._audit_sends.append(self.send(
                self.chain.tp.topic, entry.data, key=key, partition=self.chain.tp.partition,
                headers=[("seq", str(entry.seq).encode())]))
        self.audited += len(sealed)

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
    """Verify the chain of every audit partition from its committed records."""
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    records = read_all(reader, tps)
    return {tp.partition: verify_chain(schema, _rows(records[tp])) for tp in tps}


def _rows(records: list[Any]) -> Iterator[tuple[int, bytes]]:
    for position, record in enumerate(records):
        yield position, bytes(record.value)
