"""kafka-python clients with the settings they share, and the reads the backend needs.

Every reader is `read_committed`: records of aborted or still open transactions are never
seen, and "the end" of a partition is its last stable offset.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from broker.backends.kafka.errors import kafka_errors
from broker.config.kafka import KafkaConfig
from broker.errors import TransientBackendError

Header = tuple[str, bytes]
READ_TIMEOUT_S = 60.0
# A pipeline transaction writes ~8 records per input to a few dozen partitions, and its
# commit flushes them all anyway. kafka-python wakes its sender thread whenever a batch
# fills (default 16 KiB: every ~20 audit entries), which then contends for the GIL with
# the thread still sending; larger batches mean fewer wake-ups and produce requests.
TXN_BATCH_BYTES = 512 * 1024
# kafka-python hands out one partition's fetched records until they are used up; with the
# default 1 MiB per partition fetch (~4 000 inputs) a backlog was served one event type at a
# time for seconds on end (bench/README.md section 2). 64 KiB (~250 inputs) per partition per
# fetch keeps every ingress partition in each few batches; a fetch still brings several.
INGRESS_FETCH_BYTES = 64 * 1024
# kafka-python's sender sleeps retry_backoff_ms (default 100) before it resends a
# transactional request the coordinator answered with a retriable error, as it does while
# the previous transaction's markers are still being written (CONCURRENT_TRANSACTIONS), and
# waits up to as long for an outstanding one. Back to back transactions hit that often: with
# 100 ms, one transaction in ten took >100 ms and set serve's p99 ingest -> egress latency;
# 10 ms keeps those retries near a round trip (bench/README.md section 2, latency).
TXN_RETRY_BACKOFF_MS = 10


class Clients:
    """Makes kafka-python clients; every one of them bootstraps from the same servers."""

    def __init__(self, cfg: KafkaConfig) -> None:
        self.cfg = cfg

    def _common(self, role: str) -> dict[str, Any]:
        return {"bootstrap_servers": self.cfg.bootstrap_servers.split(","),
                "client_id": f"{self.cfg.client_id}-{role}",
                "request_timeout_ms": self.cfg.request_timeout_ms,
                "bootstrap_timeout_ms": min(self.cfg.request_timeout_ms, 10_000),
                **self.cfg.security_settings()}

    def admin(self) -> KafkaAdminClient:
        with kafka_errors(f"connecting to Kafka at {self.cfg.bootstrap_servers}"):
            return KafkaAdminClient(**self._common("admin"))

    def reader(self, role: str = "reader") -> KafkaConsumer:
        """A consumer outside any group, for assign/seek reads of committed data."""
        with kafka_errors(f"connecting to Kafka at {self.cfg.bootstrap_servers}"):
            return KafkaConsumer(**self._common(role), group_id=None,
                                 enable_auto_commit=False, auto_offset_reset="earliest",
                                 isolation_level="read_committed",
                                 allow_auto_create_topics=False)

    def transactional_producer(self, transactional_id: str,
                               topics: Sequence[str] = ()) -> KafkaProducer:
        """A producer for one transactional id; the caller runs init_transactions().

        `topics` are the topics it will write: their metadata is fetched now, in one
        request (kafka-python otherwise makes one round trip per topic on first send).
        """
        with kafka_errors(f"connecting to Kafka at {self.cfg.bootstrap_servers}"):
            producer = KafkaProducer(**self._common(transactional_id),
                                     transactional_id=transactional_id,
                                     transaction_timeout_ms=self.cfg.transaction_timeout_ms,
                                     enable_idempotence=True, acks="all", linger_ms=5,
                                     batch_size=TXN_BATCH_BYTES,
                                     retry_backoff_ms=TXN_RETRY_BACKOFF_MS)
        try:
            with kafka_errors("fetching topic metadata"):
                warm_metadata(producer, topics)
        except BaseException:
            close_quietly(producer)
            raise
        return producer

    def producer(self, role: str = "ingress") -> KafkaProducer:
        """An idempotent, non-transactional producer (ingress input, data keys)."""
        with kafka_errors(f"connecting to Kafka at {self.cfg.bootstrap_servers}"):
            return KafkaProducer(**self._common(role), enable_idempotence=True,
                                 acks="all", linger_ms=5)

    def group_consumer(self, assignor: Any) -> KafkaConsumer:
        cfg = self.cfg
        extra: dict[str, Any] = {}
        if cfg.instance_id:
            extra["group_instance_id"] = cfg.instance_id
        with kafka_errors(f"connecting to Kafka at {cfg.bootstrap_servers}"):
            return KafkaConsumer(**self._common("serve"), group_id=cfg.group_id,
                                 enable_auto_commit=False, auto_offset_reset="earliest",
                                 isolation_level="read_committed",
                                 allow_auto_create_topics=False,
                                 partition_assignment_strategy=(assignor,),
                                 session_timeout_ms=cfg.session_timeout_ms,
                                 heartbeat_interval_ms=cfg.heartbeat_interval_ms,
                                 max_poll_interval_ms=cfg.max_poll_interval_ms,
                                 max_poll_records=cfg.max_batch,
                                 max_partition_fetch_bytes=INGRESS_FETCH_BYTES, **extra)


def take_writer(clients: Clients, transactional_id: str, topics: list[str], what: str,
                reader_role: str, recover: Callable[[KafkaConsumer], None]) -> KafkaProducer:
    """Take a transactional id, then read back the state its writer owns.

    `init_transactions` fences every earlier holder of the id and completes or aborts its
    open transaction, so what `recover` reads afterwards is final. On any failure the new
    producer is closed before the error goes up.
    """
    producer = clients.transactional_producer(transactional_id, topics)
    try:
        with kafka_errors(f"initialising {what}"):
            producer.init_transactions()
        reader = clients.reader(reader_role)
        try:
            recover(reader)
        finally:
            reader.close()
    except BaseException:
        close_quietly(producer)
        raise
    return producer


def close_quietly(producer: KafkaProducer) -> None:
    """Close a producer that may have failed; its own error must not mask the cause."""
    with contextlib.suppress(Exception):
        producer.close(timeout=5)


def warm_metadata(producer: KafkaProducer, topics: Sequence[str]) -> None:
    """Register every topic with the producer, then wait for one metadata update.

    Uses the producer's sender (kafka-python has no public call for several topics); if
    that ever changes, the sends still work, one metadata round trip per topic.
    """
    if not topics:
        return
    sender = getattr(producer, "_sender", None)
    add_topic = getattr(sender, "add_topic", None)
    if callable(add_topic):
        for topic in topics:
            add_topic(topic)
    producer.partitions_for(topics[0])


def header(record: Any, name: str) -> str | None:
    value = header_bytes(record, name)
    return value.decode("utf-8") if value is not None else None


def header_bytes(record: Any, name: str) -> bytes | None:
    """A header's bytes as sent (a signature need not be UTF-8)."""
    for key, value in record.headers or ():
        if key == name:
            return bytes(value) if value is not None else None
    return None


def headers(**values: object) -> list[Header]:
    """Kafka headers from keyword values; None values are left out."""
    return [(k, str(v).encode("utf-8")) for k, v in values.items() if v is not None]


END_OFFSET_ATTEMPTS = 5


def end_offsets(consumer: KafkaConsumer, tps: Sequence[TopicPartition]) -> dict[Any, int]:
    """The last stable offset of each partition (read_committed consumers).

    kafka-python 3.0.12 leaves out partitions whose leader its metadata does not know yet
    (and then fails with a KeyError), so the topics are looked up first.
    """
    with kafka_errors("listing end offsets"):
        for topic in sorted({tp.topic for tp in tps}):
            if not consumer.partitions_for_topic(topic):
                raise TransientBackendError(f"topic {topic} is not (yet) known to Kafka")
        for attempt in range(END_OFFSET_ATTEMPTS):
            try:
                return dict(consumer.end_offsets(list(tps)))
            except KeyError:  # a partition whose leader the metadata has not caught up on
                if attempt == END_OFFSET_ATTEMPTS - 1:
                    break
                consumer._client.cluster.request_update()
                time.sleep(0.2 * (attempt + 1))
        raise TransientBackendError("listing end offsets: a partition's leader is not (yet) "
                                    "known to this client")


def wait_visible(consumer: KafkaConsumer, written: dict[TopicPartition, int],
                 timeout_s: float = 10.0) -> bool:
    """Wait until each partition's last stable offset is past the offset written there."""
    deadline = time.monotonic() + timeout_s
    tps = sorted(written, key=str)
    while True:
        ends = end_offsets(consumer, tps)
        if all(ends[tp] > offset for tp, offset in written.items()):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def read_range(consumer: KafkaConsumer, starts: dict[TopicPartition, int],
               timeout_s: float = READ_TIMEOUT_S,
               max_records: int | None = None) -> dict[TopicPartition, list[Any]]:
    """Every committed record from each start offset to the partition's end (or, with
    `max_records`, at most that many from each partition)."""
    return read_with_ends(consumer, starts, timeout_s, max_records)[0]


def read_with_ends(consumer: KafkaConsumer, starts: dict[TopicPartition, int],
                   timeout_s: float = READ_TIMEOUT_S, max_records: int | None = None
                   ) -> tuple[dict[TopicPartition, list[Any]], dict[TopicPartition, int]]:
    """Committed records from each start offset to the end, and the end offsets.

    The end is fixed when the read begins (the last stable offset). Control records
    (transaction markers) occupy offsets too; the consumer's position moves past them,
    so a caller that reads on later should continue from the returned end. (With
    `max_records` the returned ends are only meaningful for partitions read to the end.)
    """
    out: dict[TopicPartition, list[Any]] = {tp: [] for tp in starts}
    if not starts:
        return out, {}
    tps = list(starts)
    ends = end_offsets(consumer, tps)
    todo = {tp for tp, start in starts.items() if start < ends[tp]}
    with kafka_errors("reading " + ", ".join(sorted({tp.topic for tp in tps}))), \
            _assigned(consumer, todo):
        pending = set(todo)
        for tp in pending:
            consumer.seek(tp, starts[tp])
        deadline = time.monotonic() + timeout_s
        while pending:
            for tp, records in consumer.poll(timeout_ms=200).items():
                out[tp].extend(r for r in records if r.offset < ends[tp])
            done = {tp for tp in pending if consumer.position(tp) >= ends[tp] or
                    (max_records is not None and len(out[tp]) >= max_records)}
            if done:
                consumer.pause(*done)  # stop fetching what is complete
                pending -= done
            if pending and time.monotonic() > deadline:
                raise TransientBackendError(
                    f"reading {sorted(str(tp) for tp in pending)} did not reach the end "
                    f"offsets within {timeout_s:.0f}s")
    if max_records is not None:
        out = {tp: records[:max_records] for tp, records in out.items()}
    return out, {tp: max(int(ends[tp]), starts[tp]) for tp in tps}


def read_all(consumer: KafkaConsumer, tps: Iterable[TopicPartition]) -> dict[Any, list[Any]]:
    return read_range(consumer, dict.fromkeys(tps, 0))


def last_committed(consumer: KafkaConsumer, tp: TopicPartition) -> Any | None:
    """The last committed record of a partition, or None when it holds none.

    Reads backwards in growing windows from the end, because the tail may be control
    records or records of aborted transactions.
    """
    end = end_offsets(consumer, [tp])[tp]
    window = 16
    stop = end
    while stop > 0:
        start = max(0, stop - window)
        records = _read_window(consumer, tp, start, stop)
        if records:
            return records[-1]
        stop, window = start, window * 4
    return None


def _read_window(consumer: KafkaConsumer, tp: TopicPartition, start: int,
                 stop: int) -> list[Any]:
    got: list[Any] = []
    with kafka_errors(f"reading {tp.topic}[{tp.partition}]"), _assigned(consumer, {tp}):
        consumer.seek(tp, start)
        deadline = time.monotonic() + READ_TIMEOUT_S
        while consumer.position(tp) < stop:
            for records in consumer.poll(timeout_ms=200).values():
                got.extend(r for r in records if r.offset < stop)
            if time.monotonic() > deadline:
                raise TransientBackendError(f"reading {tp} timed out")
    return got


@contextlib.contextmanager
def _assigned(consumer: KafkaConsumer, tps: set[TopicPartition]
              ) -> Iterator[None]:
    """Assign exactly `tps` for one read; unassign after, so no state (pauses) carries over."""
    consumer.assign([])
    consumer.assign(sorted(tps))
    try:
        yield
    finally:
        consumer.assign([])
