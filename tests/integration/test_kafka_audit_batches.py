"""The audit topic's batch records on a real Kafka: a transaction whose entries exceed the
record size limit writes several batch records in order (and the chain recovers and
continues after them), and a chain that serve wrote, copied with one alteration into
the audit partitions of another deployment, fails `audit verify` at the altered record
for every way of altering it (tests/unit/test_kafka_audit_batch.py holds the same
alterations without Kafka)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kafka import KafkaProducer, TopicPartition

from broker.app.service import PartitionChainsReport
from broker.audit.entries import draft
from broker.backends.kafka.audit_batch import decode_batch, read_partition
from broker.backends.kafka.chain import RECORD_OVERHEAD, AuditChain, run_transaction
from broker.backends.kafka.event_log import KafkaEventLog
from broker.backends.kafka.io import Clients, read_all
from tests import factories as f
from tests.integration.kafka_support import ingest_lines, jsonl, kafka_env, run_cli
from tests.unit.test_kafka_audit_batch import BATCH, TAMPERS, Rec

NOW = "2026-05-10T12:00:00Z"
SMALL_REQUEST = 8 * 1024


def _drafts(count: int, tag: str) -> list[Any]:
    return [draft("access", trace_id=None, start_ms=1_000 + i, recipient="boa-hor-noord",
                  purpose="p", decision=None, detail={"n": str(i), "tag": tag, "pad": "x" * 200})
            for i in range(count)]


def test_a_transaction_over_the_record_limit_writes_several_batches_in_order(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    with kafka_env(kafka_bootstrap, tmp_path / "kafka", partitions=1) as env:
        broker = env.broker()
        try:
            log = broker.log
            assert isinstance(log, KafkaEventLog)
            tp = TopicPartition(log.layout.names.audit, 0)

            def writer(txn: str) -> tuple[KafkaProducer, AuditChain]:
                # a producer whose request cap is small, so the limit is what splits
                producer = KafkaProducer(bootstrap_servers=kafka_bootstrap,
                                         transactional_id=f"{env.name}-{txn}",
                                         enable_idempotence=True, acks="all",
                                         max_request_size=SMALL_REQUEST)
                producer.init_transactions()
                chain = AuditChain(log.audit_schema, tp.topic, 0)
                reader = Clients(log.cfg).reader("test-recover")
                try:
                    chain.recover(reader)
                finally:
                    reader.close()
                return producer, chain

            producer, chain = writer("one")
            try:
                def body(tx: Any) -> None:  # called twice in one transaction: one batch run
                    tx.audit(_drafts(30, "a"))
                    tx.audit(_drafts(30, "b"))

                run_transaction(producer, chain, "test batches", body)
            finally:
                producer.close()
            assert chain.head is not None
            assert chain.head.next_seq == 60

            producer, chain = writer("two")  # another writer recovers the head from Kafka
            try:
                assert chain.head is not None
                assert chain.head.next_seq == 60
                run_transaction(producer, chain, "test more", lambda tx: tx.audit(
                    _drafts(3, "c")))
            finally:
                producer.close()

            reader = Clients(log.cfg).reader("test-read")
            try:
                records = read_all(reader, [tp])[tp]
            finally:
                reader.close()
            verified = broker.verify_audit()
        finally:
            broker.close()

    first, second = records[:-1], records[-1:]
    assert len(first) > 2  # 60 entries of ~500 bytes do not fit one 7 KiB record
    assert all(len(r.value) <= SMALL_REQUEST - RECORD_OVERHEAD for r in records)
    assert [r.offset for r in first] == list(range(first[0].offset,
                                                   first[0].offset + len(first)))  # one txn
    batches = [decode_batch(BATCH, bytes(r.value)) for r in records]
    starts = [b.first_seq for b in batches]
    assert starts == sorted(starts)
    assert starts[0] == 0
    assert sum(len(b.entries) for b in batches) == 63
    assert [len(b.entries) for b in batches[len(first):]] == [3]
    assert len(second) == 1
    read = read_partition(log.audit_schema, records)
    assert read.report.ok, read.report.problem
    assert [log.audit_schema.decode(e)["detail"]["tag"] for e in read.data] == \
        ["a"] * 30 + ["b"] * 30 + ["c"] * 3
    assert isinstance(verified, PartitionChainsReport)
    assert verified.ok, verified.problem
    assert verified.entries == 63


def test_every_alteration_of_a_served_chain_fails_verify_at_its_record(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    with kafka_env(kafka_bootstrap, tmp_path / "source", partitions=1, max_batch=2) as env:
        ingest_lines(env, tmp_path / "in.jsonl", jsonl([f.woninginbraak() for _ in range(6)]))
        consumed = 0
        for _ in range(3):  # on a loaded machine, --until-idle can stop before joining
            code, out = run_cli([*env.args(), "--json", "--now", NOW, "serve", "--until-idle"])
            assert code == 0, out
            consumed += json.loads(out.strip().splitlines()[-1])["consumed"]
            if consumed >= 6:
                break
        broker = env.broker()
        try:
            log = broker.log
            assert isinstance(log, KafkaEventLog)
            reader = Clients(log.cfg).reader("test-copy")
            try:
                tp = TopicPartition(log.layout.names.audit, 0)
                served = [Rec(r.offset, bytes(r.value), list(r.headers))
                          for r in read_all(reader, [tp])[tp]]
            finally:
                reader.close()
        finally:
            broker.close()
    intact = read_partition(log.audit_schema, served)
    assert intact.report.ok, intact.report.problem
    assert len(served) >= 4
    assert len(decode_batch(BATCH, served[1].value).entries) >= 3  # a batch worth altering

    cases = sorted(TAMPERS)
    with kafka_env(kafka_bootstrap, tmp_path / "copy", partitions=len(cases)) as copy:
        broker = copy.broker()  # creates the topics; nothing has written to them
        try:
            producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
            try:
                for partition, how in enumerate(cases):
                    for rec in TAMPERS[how](served):
                        producer.send(f"{copy.name}.audit", rec.value, partition=partition,
                                      headers=rec.headers)
                for rec in served:  # the commands partition: the intact chain, copied
                    producer.send(f"{copy.name}.audit", rec.value, partition=len(cases),
                                  headers=rec.headers)
                producer.flush()
            finally:
                producer.close()
            report = broker.verify_audit()
        finally:
            broker.close()
        code, out = run_cli([*copy.args(), "--json", "audit", "verify"])

    assert isinstance(report, PartitionChainsReport)
    for partition, how in enumerate(cases):
        problem = report.chains[partition].problem
        assert problem is not None, how
        assert problem.startswith("record at offset "), (how, problem)
    assert report.chains[len(cases)].ok
    assert report.chains[len(cases)].entries == intact.report.entries
    assert code == 1, out
    assert json.loads(out.strip().splitlines()[-1])["problem"].startswith(
        "audit partition 0: record at offset ")
