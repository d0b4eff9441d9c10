"""How many Kafka records `serve` writes per input, counted read_committed per topic family
(issue 14: 7.8 before batching the audit; the target is at most 4).

The input is the sample covenant's mix as bench/pipeline_bench.py makes it (woninginbraak,
gebiedsverbod, detentie_uitstroom, boa_waarneming as DaySynth synthesises them), produced
to the ingress topics as Avro single-object records the way bench/kafka_bench.py does.
The audit partitions hold one batch record per transaction: the records there equal the
transaction markers there (each committed transaction leaves one commit marker on every
partition it wrote; read_uncommitted sees every data record and no marker).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from broker.backends.kafka.audit_batch import batch_schema, decode_batch, split
from broker.backends.kafka.event_log import KafkaEventLog
from broker.backends.kafka.io import Clients, end_offsets, read_all
from broker.backends.kafka.pipeline import home_partition
from tests.integration.kafka_support import kafka_env, run_cli

NOW = "2026-05-12T18:00:00Z"  # bench/kafka_bench.py's DAY_NOW
INPUTS = 400
MAX_PER_INPUT = 4.0


def _load_pipeline_bench() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "bench" / "pipeline_bench.py"
    spec = importlib.util.spec_from_file_location("pipeline_bench", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    module = sys.modules.setdefault("pipeline_bench", module)  # its dataclasses look it up
    spec.loader.exec_module(module)
    return module


def _mix(broker: Any, count: int, seed: int = 7) -> list[tuple[str, str, str, bytes]]:
    """(source, event type, event_id, Avro bytes): the pipeline bench's own mix
    (`make_inputs`, which bench/kafka_bench.py produces too), with each event's id."""
    out = []
    for source, event_type, data in _load_pipeline_bench().make_inputs(broker, count, seed):
        _, record = broker.registry.decode_single_object(data)
        out.append((source, event_type, str(record["event_id"]).lower(), data))
    return out


def _family(log: KafkaEventLog, topic: str) -> str:
    names = log.layout.names
    if topic == names.store:
        return "store"
    if topic == names.audit:
        return "audit"
    if topic == names.keys:
        return "keys"
    if log.layout.stream_of(topic) is not None:
        return "egress"
    return "other"


def test_serve_writes_one_audit_record_per_transaction_and_at_most_4_per_input(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    with kafka_env(kafka_bootstrap, tmp_path / "kafka", partitions=2, max_batch=100) as env:
        broker = env.broker()  # creates the topics
        try:
            log = broker.log
            assert isinstance(log, KafkaEventLog)
            inputs = _mix(broker, INPUTS)
            ingress = {t: log.layout.names.ingress(t) for t in broker.registry.event_types()}
            producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
            try:
                for source, event_type, event_id, data in inputs:
                    producer.send(ingress[event_type], data, key=event_id.encode(),
                                  partition=home_partition(event_id, env.partitions),
                                  headers=[("source", source.encode())])
                producer.flush()
            finally:
                producer.close()
            consumed = 0
            for _ in range(5):  # on a loaded machine, --until-idle can stop before joining
                code, out = run_cli([*env.args(), "--json", "--now", NOW, "serve",
                                     "--until-idle"])
                assert code == 0, out
                consumed += json.loads(out.strip().splitlines()[-1])["consumed"]
                if consumed >= INPUTS:
                    break
            assert consumed == INPUTS

            topics = [s for s in log.layout.specs() if s.role != "ingress"]
            tps = [TopicPartition(s.name, p) for s in topics for p in range(s.partitions)]
            reader = Clients(log.cfg).reader("test-count")
            everything = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=None,
                                       enable_auto_commit=False,
                                       auto_offset_reset="earliest",
                                       isolation_level="read_uncommitted")
            try:
                committed = read_all(reader, tps)
                audit_tps = [tp for tp in tps if tp.topic == log.layout.names.audit]
                uncommitted = read_all(everything, audit_tps)
                ends = end_offsets(reader, audit_tps)
            finally:
                reader.close()
                everything.close()
        finally:
            broker.close()

    families: Counter[str] = Counter()
    for tp, records in committed.items():
        families[_family(log, tp.topic)] += len(records)
    per_input = {name: round(n / INPUTS, 3) for name, n in sorted(families.items())}
    total = sum(families.values()) / INPUTS
    audit_records = sum(len(committed[tp]) for tp in audit_tps)
    aborted = sum(len(uncommitted[tp]) for tp in audit_tps) - audit_records
    markers = sum(ends[tp] - len(uncommitted[tp]) for tp in audit_tps)
    entries = sum(int(dict(r.headers).get("count", b"1")) for tp in audit_tps
                  for r in committed[tp])
    transactions = [group for tp in audit_tps for group in _transactions(committed[tp])]
    sizes = [sum(len(r.value) for r in group) for group in transactions]
    print(f"\nrecords per input (read_committed, {INPUTS} inputs, sample mix): "
          f"{per_input}, total {total:.3f}; audit: {audit_records} records holding "
          f"{entries} entries, {markers} transactions on the audit partitions "
          f"(largest {max(sizes)} bytes of batches)")
    assert aborted == 0
    assert len(transactions) == markers
    # one batch record per transaction, unless its entries exceed one record's limit
    schema = batch_schema(log.audit_schema)
    for group in transactions:
        batches = [decode_batch(schema, bytes(r.value)) for r in group]
        assert len(group) == len(split(batches[0].first_seq,
                                       [e for b in batches for e in b.entries])), \
            [len(r.value) for r in group]
    assert entries > audit_records
    assert total <= MAX_PER_INPUT, per_input


def _transactions(records: list[Any]) -> list[list[Any]]:
    """Committed records of one partition grouped by transaction: a transaction's records
    have consecutive offsets; its commit marker takes the offset after them."""
    out: list[list[Any]] = []
    for record in records:
        if out and record.offset == out[-1][-1].offset + 1:
            out[-1].append(record)
        else:
            out.append([record])
    return out
