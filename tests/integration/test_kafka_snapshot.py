"""The test snapshot refuses to count past a transaction a killed writer left open.

Stop 18's CI run failed `check_exactly_once` with "36 release entries for 27 egress
records": a member killed with SIGKILL left a transaction open on an egress topic, so a
read_committed read of that topic stopped at the open transaction's first record and hid
the other member's later commits there, while the other member's audit partition showed
their release entries. Here the same state is made on purpose: the snapshot names the
partition instead of miscounting, and `abort_open_transactions` (what the member taking
over the partition does) ends it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.backends.kafka.event_log import KafkaEventLog
from broker.backends.kafka.io import Clients
from tests import factories as f
from tests.integration.kafka_support import (
    abort_open_transactions,
    check_exactly_once,
    ingest_lines,
    jsonl,
    kafka_env,
    run_cli,
    snapshot,
)

NOW = "2026-05-10T12:00:00Z"


def test_an_open_transaction_is_named_then_aborted(kafka_bootstrap: str,
                                                    tmp_path: Path) -> None:
    with kafka_env(kafka_bootstrap, tmp_path / "kafka", partitions=2, max_batch=3) as env:
        ingest_lines(env, tmp_path / "in.jsonl", jsonl([f.woninginbraak() for _ in range(6)]))
        code, out = run_cli([*env.args(), "--now", NOW, "serve", "--until-idle"])
        assert code == 0, out
        before = check_exactly_once(snapshot(env))

        broker = env.broker()
        try:
            log = broker.log
            assert isinstance(log, KafkaEventLog)
            recipient, purpose = log.layout.streams[0]
            topic = log.layout.names.egress(recipient, purpose)
            producer = Clients(log.cfg).transactional_producer(log.cfg.partition_txn_id(0))
            producer.init_transactions()
            producer.begin_transaction()
            producer.send(topic, key=b"k", value=b"left open")
            producer.flush()
            # no commit, no abort, no close: as a SIGKILL leaves it
        finally:
            broker.close()

        with pytest.raises(AssertionError, match=rf"transaction stays open on \['{topic}\[0\]'\]"):
            snapshot(env)
        abort_open_transactions(env)
        after = check_exactly_once(snapshot(env))
        assert after.releases == before.releases
        assert after.aborted == before.aborted + 1  # the record left open, now aborted
