"""Smoke test: kafka-python transactions against the real Kafka broker.

Proves, on the Kafka version the launcher runs, that
* a transactional, idempotent producer commits and aborts transactions,
* a `read_committed` consumer sees exactly the committed records,
* consume-transform-produce with `send_offsets_to_transaction` moves the group's offset.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

COMMITTED = 100
ABORTED = 10
TIMEOUT_S = 30.0


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def admin(kafka_bootstrap: str) -> Iterator[KafkaAdminClient]:
    client = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="smoke-admin")
    yield client
    client.close()


def _create_topics(admin: KafkaAdminClient, *names: str) -> None:
    admin.create_topics(
        {name: {"num_partitions": 1, "replication_factor": 1} for name in names},
        wait_for_metadata=True,
    )
    assert set(names) <= set(admin.list_topics())


def _producer(bootstrap: str, transactional_id: str) -> KafkaProducer:
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        transactional_id=transactional_id,
        enable_idempotence=True,
        acks="all",
    )
    producer.init_transactions()
    return producer


def _drain(consumer: KafkaConsumer, expected: int, settle_s: float = 1.0) -> list[bytes]:
    """Poll until `expected` values arrived, then keep polling `settle_s` to catch extras."""
    values: list[bytes] = []
    deadline = time.monotonic() + TIMEOUT_S
    settle_until: float | None = None
    while time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=200).values():
            values.extend(record.value for record in records)
        if len(values) >= expected and settle_until is None:
            settle_until = time.monotonic() + settle_s
        if settle_until is not None and time.monotonic() >= settle_until:
            break
    return values


def test_transactions_read_committed(kafka_bootstrap: str, admin: KafkaAdminClient) -> None:
    topic = _unique("smoke-tx")
    _create_topics(admin, topic)

    producer = _producer(kafka_bootstrap, _unique("smoke-tx-producer"))
    try:
        producer.begin_transaction()
        for i in range(COMMITTED // 2):
            producer.send(topic, f"committed-{i}".encode())
        producer.commit_transaction()

        producer.begin_transaction()
        for i in range(ABORTED):
            producer.send(topic, f"aborted-{i}".encode())
        producer.flush()  # the aborted records really reach the log before the abort marker
        producer.abort_transaction()

        producer.begin_transaction()
        for i in range(COMMITTED // 2, COMMITTED):
            producer.send(topic, f"committed-{i}".encode())
        producer.commit_transaction()
    finally:
        producer.close()

    committed_reader = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    try:
        seen = _drain(committed_reader, COMMITTED)
    finally:
        committed_reader.close()
    assert seen == [f"committed-{i}".encode() for i in range(COMMITTED)]

    # The aborted records are in the log: a read_uncommitted consumer does see them.
    uncommitted_reader = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_uncommitted",
    )
    try:
        everything = _drain(uncommitted_reader, COMMITTED + ABORTED)
    finally:
        uncommitted_reader.close()
    assert sorted(everything) == sorted(
        [f"committed-{i}".encode() for i in range(COMMITTED)]
        + [f"aborted-{i}".encode() for i in range(ABORTED)]
    )


def test_consume_transform_produce(kafka_bootstrap: str, admin: KafkaAdminClient) -> None:
    source, sink, group = _unique("smoke-ctp-in"), _unique("smoke-ctp-out"), _unique("smoke-g")
    _create_topics(admin, source, sink)
    count = 20

    seed = _producer(kafka_bootstrap, _unique("smoke-ctp-seed"))
    try:
        seed.begin_transaction()
        for i in range(count):
            seed.send(source, f"in-{i}".encode())
        seed.commit_transaction()
    finally:
        seed.close()

    consumer = KafkaConsumer(
        source,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    producer = _producer(kafka_bootstrap, _unique("smoke-ctp-producer"))
    try:
        consumed = []
        deadline = time.monotonic() + TIMEOUT_S
        while len(consumed) < count and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                consumed.extend(records)
        assert len(consumed) == count

        producer.begin_transaction()
        for record in consumed:
            producer.send(sink, record.value.replace(b"in-", b"out-"))
        tp = TopicPartition(source, 0)
        next_offset = consumed[-1].offset + 1
        producer.send_offsets_to_transaction(
            {tp: OffsetAndMetadata(next_offset, "", -1)}, consumer.group_metadata()
        )
        producer.commit_transaction()

        assert consumer.committed(tp) == next_offset
    finally:
        producer.close()
        consumer.close()

    group_offsets = admin.list_group_offsets(group)[group]
    assert group_offsets[TopicPartition(source, 0)].offset == count

    reader = KafkaConsumer(
        sink,
        bootstrap_servers=kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    try:
        out = _drain(reader, count)
    finally:
        reader.close()
    assert out == [f"out-{i}".encode() for i in range(count)]
