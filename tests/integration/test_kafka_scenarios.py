"""The scenario tests of the slice (tests/unit/test_scenarios.py), on the Kafka backend.

Every test function of the unit module is imported here, so pytest collects it again (with
its parametrisations) in this module, where the `backend` fixture is "kafka": the unit
module's `broker` fixture then yields a Kafka Broker from `kafka_broker` below. The
scenarios speak to the application surface only (Broker.ingest_settled publishes to ingress
and runs serve until idle; consume, switch_theme, verify_audit, the audit entries), so
nothing of the pipeline is re-implemented here. Each test gets its own KafkaEnv (topic
prefix, group, transactional ids, data dir) with one partition to keep it fast.

Where a scenario cannot hold on Kafka for a real reason the unit test says so and adapts
its assertion for Kafka only (the tombstone offset in
test_area_ban_expiry_sends_one_tombstone_per_recipient: Kafka offsets are not dense).
"""

from __future__ import annotations

import pytest
from kafka import KafkaProducer

from broker.app.service import Broker, PartitionChainsReport
from tests import factories as f
from tests.unit import test_scenarios as scenarios
from tests.unit.test_scenarios import broker  # noqa: F401 - the fixture the scenarios take

# Collected again here, against the "kafka" `backend` below.
SCENARIOS = {name: fn for name, fn in vars(scenarios).items()
             if name.startswith("test_") and callable(fn)}
globals().update(SCENARIOS)


@pytest.fixture(params=["kafka"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_every_scenario_is_collected_on_kafka() -> None:
    assert len(SCENARIOS) == 16, sorted(SCENARIOS)  # 34 tests with their parameters
    assert all(name in globals() for name in SCENARIOS)


def test_verify_audit_checks_every_partition_chain(kafka_broker: Broker) -> None:
    """Broker.verify_audit on Kafka verifies the audit partitions' chains, not only the
    integrated log (which holds nothing until `audit integrate` runs)."""
    scenarios.ingest(kafka_broker, "politie.woninginbraak", f.woninginbraak())
    intact = kafka_broker.verify_audit()
    assert isinstance(intact, PartitionChainsReport)
    assert intact.ok, intact.problem
    assert intact.entries == len(scenarios.audit_entries(kafka_broker)) > 0
    # a record no partition writer wrote, appended to the chain of data partition 0
    kafka = kafka_broker.settings.kafka
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers)
    try:
        producer.send(f"{kafka.topic_prefix}audit", b"not an audit entry",
                      partition=0).get(timeout=30)
    finally:
        producer.close()
    broken = kafka_broker.verify_audit()
    assert not broken.ok
    assert broken.problem is not None
    assert broken.problem.startswith("audit partition 0:")
