"""The commands writer (access, control, tombstones): fencing and ambiguous commits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kafka import errors as kerr

from broker.audit.entries import draft
from broker.backends.kafka.commands import CommandWriter
from broker.backends.kafka.event_log import KafkaEventLog
from tests.integration.kafka_support import check_exactly_once, kafka_env, snapshot


def _entry(n: int) -> dict[str, Any]:
    return draft("access", trace_id=None, start_ms=1_700_000_000_000 + n,
                 recipient="preventie", purpose="preventie-woninginbraak",
                 detail={"count": "0", "n": str(n)})


def _commands_entries(env: Any) -> list[dict[str, Any]]:
    snap = snapshot(env)
    check_exactly_once(snap)  # every chain intact
    return snap.audit[env.partitions]  # the commands chain is the last partition


def test_two_command_writers_take_turns_by_fencing(kafka_bootstrap: str,
                                                   tmp_path: Path) -> None:
    with kafka_env(kafka_bootstrap, tmp_path, partitions=2) as env:
        broker = env.broker()
        try:
            log = broker.log
            assert isinstance(log, KafkaEventLog)
            one = CommandWriter(log.clients, log.layout, log.audit_schema, log.link)
            two = CommandWriter(log.clients, log.layout, log.audit_schema, log.link)
            one.open()
            two.open()  # fences `one`
            one.append_audit([_entry(1)])  # fenced: re-opens (fencing `two`), re-reads, writes
            two.append_audit([_entry(2)])  # likewise
            one.append_audit([_entry(3)])
            one.close()
            two.close()
        finally:
            broker.close()
        entries = _commands_entries(env)
    assert [e["detail"]["n"] for e in entries] == ["1", "2", "3"]
    assert [e["seq"] for e in entries] == [0, 1, 2]


def test_a_commit_that_reports_failure_after_committing_is_not_written_twice(
        kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with kafka_env(kafka_bootstrap, tmp_path, partitions=2) as env:
        broker = env.broker()
        try:
            log = broker.log
            assert isinstance(log, KafkaEventLog)
            writer = log.commands
            writer.open()
            assert writer.producer is not None
            real_commit = writer.producer.commit_transaction
            calls: list[int] = []

            def commit_then_time_out() -> None:
                real_commit()
                calls.append(1)
                raise kerr.KafkaTimeoutError("EndTxn timed out (the commit went through)")

            monkeypatch.setattr(writer.producer, "commit_transaction", commit_then_time_out)
            writer.append_audit([_entry(1)])  # retried after the "failure": nothing rewritten
            writer.append_audit([_entry(2)])
        finally:
            broker.close()
        entries = _commands_entries(env)
    assert calls == [1]
    assert [e["detail"]["n"] for e in entries] == ["1", "2"]
