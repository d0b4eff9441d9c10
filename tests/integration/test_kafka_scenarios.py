"""The scenario tests of the slice (tests/unit/test_scenarios.py), on the Kafka backend.

Every test function of the unit module is imported here, so pytest collects it again (with
its parametrisations) in this module, where the `broker` fixture is overridden: instead of
the embedded Broker it yields a KafkaScenarioBroker, an adapter with the surface the
scenario tests use. `ingest` produces through the Kafka Broker and then runs serve in
process until idle with the same decision time, so each call returns with everything
decided, as the embedded ingest does. Each test gets its own KafkaEnv (topic prefix, group,
transactional ids, data dir) with one partition to keep it fast.

Where a scenario cannot hold on Kafka for a real reason the unit test says so and adapts
its assertion for Kafka only (the tombstone offset in
test_area_ban_expiry_sends_one_tombstone_per_recipient: Kafka offsets are not dense).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kafka import TopicPartition

from broker.app.service import Broker, Delivered, IngestReport, QuarantineNote
from broker.backends.kafka.event_log import KafkaEventLog
from broker.backends.kafka.ingress import produce_lines
from broker.backends.kafka.io import read_all
from broker.backends.kafka.runner import serve
from broker.pipeline.decide import DecideCounts
from tests.integration.kafka_support import KafkaEnv
from tests.unit import test_scenarios as scenarios

# Collected again here, against the Kafka `broker` fixture below.
SCENARIOS = {name: fn for name, fn in vars(scenarios).items()
             if name.startswith("test_") and callable(fn)}
globals().update(SCENARIOS)


@dataclass
class AuditVerdict:
    """Broker.verify_audit() on Kafka: every audit partition's chain, one verdict."""

    ok: bool
    entries: int
    problems: dict[int, str]


class KafkaAuditRows:
    """The `log` surface the scenarios read: every audit entry, across the audit partitions."""

    def __init__(self, log: KafkaEventLog) -> None:
        self.log = log

    def records(self) -> list[tuple[int, int, int, bytes]]:
        """(start_time, partition, offset, entry) of every committed audit entry.

        Kafka's audit is one hash chain per audit partition (decisions and quarantine on the
        data partitions, commands such as access, control and tombstones on the last one), so
        there is no single log order; the order here is (start_time, partition, offset):
        deterministic, and within one partition the order the entries were written.
        """
        schema = self.log.audit_schema
        tps = [TopicPartition(self.log.layout.names.audit, p)
               for p in range(self.log.cfg.audit_partitions)]
        out = []
        for tp, found in read_all(self.log.reader, tps).items():
            for record in found:
                data = bytes(record.value)
                out.append((schema.decode(data)["start_time"], tp.partition, record.offset,
                            data))
        return sorted(out, key=lambda r: r[:3])

    def audit_rows(self) -> Iterator[tuple[int, bytes]]:
        for i, (*_, data) in enumerate(self.records()):
            yield i, data


class KafkaScenarioBroker:
    """A Kafka-backed Broker with the embedded Broker's synchronous ingest."""

    def __init__(self, broker: Broker) -> None:
        assert isinstance(broker.log, KafkaEventLog)
        self.broker = broker
        self.settings = broker.settings
        self.registry = broker.registry
        self.plans = broker.plans
        self.log = KafkaAuditRows(broker.log)

    def _entries(self, name: str) -> list[dict[str, Any]]:
        schema = self.registry.get("records.audit_entry")
        return [e for _, data in self.log.audit_rows()
                if (e := schema.decode(data))["name"] == name]

    def ingest(self, source: str, event_type: str, inputs: Iterable[tuple[str, bytes]],
               now: datetime) -> IngestReport:
        quarantined_before = len(self._entries("quarantine"))
        produced = produce_lines(self.broker, source, event_type,
                                 ((i, raw) for i, (_, raw) in enumerate(inputs, 1)))
        served = serve(self.broker, now=now, until_idle=True)
        assert served.consumed == produced.produced, (served, produced)
        report = IngestReport(source, produced.event_type, accepted=served.stored,
                              tombstones=served.tombstones)
        # serve counts quarantined inputs; the notes (position, reason) are in the audit.
        report.quarantined = [QuarantineNote(e["detail"]["position"], e["reason_code"] or "",
                                             e["reason"] or "")
                              for e in self._entries("quarantine")[quarantined_before:]]
        assert len(report.quarantined) == served.quarantined
        report.decided = DecideCounts(served.stored, served.released, served.withheld)
        return report

    def consume(self, recipient: str, purpose: str | None, from_offset: int,
                now: datetime, limit: int | None = None) -> list[Delivered]:
        return self.broker.consume(recipient, purpose, from_offset, now, limit)

    def switch_theme(self, theme: str, on: bool, now: datetime) -> None:
        self.broker.switch_theme(theme, on, now)

    def verify_audit(self) -> AuditVerdict:
        # Broker.verify_audit() reads log.audit_rows(), which Kafka refuses (one chain per
        # partition): verify each partition's chain, as `audit verify` does on Kafka.
        reports = self.broker.log.verify_audit_partitions()
        return AuditVerdict(all(r.ok for r in reports.values()),
                            sum(r.entries for r in reports.values()),
                            {p: r.problem or "" for p, r in reports.items() if not r.ok})


@pytest.fixture
def broker(kafka_bootstrap: str, tmp_path: Path) -> Iterator[KafkaScenarioBroker]:
    env = KafkaEnv(kafka_bootstrap, tmp_path / "kafka", partitions=1)
    kafka_broker = env.broker()
    try:
        yield KafkaScenarioBroker(kafka_broker)
    finally:
        kafka_broker.close()
        env.cleanup()


def test_every_scenario_is_collected_on_kafka() -> None:
    assert len(SCENARIOS) == 15, sorted(SCENARIOS)  # 33 tests with their parameters
    assert all(name in globals() for name in SCENARIOS)
