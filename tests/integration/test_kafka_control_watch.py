"""Issue 14 item 3: `serve` reads the control topic only when it moved, and still applies a
control switch made while it runs to the batches after it; it sweeps expiries only when one
can be due, and still tombstones what is due."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from broker.app.service import Broker
from broker.backends.kafka.event_log import KafkaEventLog
from broker.backends.kafka.runner import Server
from broker.clock import parse_instant
from tests import factories as f
from tests.integration.kafka_support import (
    KafkaEnv,
    ingest_lines,
    jsonl,
    kafka_env,
    lines_file,
    run_cli,
    snapshot,
)

NOW = "2026-05-10T12:00:00Z"
TYPE = "politie.woninginbraak"


def _ingest(env: KafkaEnv, path: Path, events: list[dict[str, Any]]) -> None:
    ingest_lines(env, path, jsonl(events), event_type=TYPE)


def _wait(what: str, done: Callable[[], bool], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _counting(monkeypatch: pytest.MonkeyPatch, cls: type, name: str) -> list[int]:
    """Calls of cls.name (the real method runs): a spy, not a mock."""
    calls: list[int] = []
    real = getattr(cls, name)

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, spy)
    return calls


def test_serve_reads_the_control_topic_only_when_it_moved(
        kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with kafka_env(kafka_bootstrap, tmp_path / "kafka", partitions=2, max_batch=3) as env:
        _ingest(env, tmp_path / "in.jsonl", [f.woninginbraak() for _ in range(30)])
        broker = env.broker()
        try:
            reads = _counting(monkeypatch, KafkaEventLog, "control_events")
            sweeps = _counting(monkeypatch, Broker, "sweep_expiries")  # each reads control
            report = Server(broker, now=parse_instant(NOW), until_idle=True).run()
        finally:
            broker.close()
    assert report.stored == 30
    assert report.batches >= 8  # 30 inputs, at most 3 a batch
    # One read when serve starts; each expiry sweep reads it too (on its own schedule).
    assert len(reads) <= 1 + len(sweeps), (len(reads), len(sweeps), report.batches)


def test_serve_sweeps_expiries_only_when_one_is_due(
        kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bans = [f.gebiedsverbod(valid_from="2026-05-01", valid_until="2026-05-31",
                            area={"wijken": ["noord"], "streets": ["Dorpsstraat"]})
            for _ in range(24)]
    with kafka_env(kafka_bootstrap, tmp_path / "kafka", partitions=2, max_batch=3) as env:
        code, out = run_cli([*env.args(), "ingest", "--source", "om", "--type",
                             "om.gebiedsverbod", str(lines_file(tmp_path / "b.jsonl",
                                                                jsonl(bans)))])
        assert code == 0, out
        broker = env.broker()
        try:
            sweeps = _counting(monkeypatch, Broker, "sweep_expiries")
            runs = []  # (report, sweeps): on a loaded machine a run can end before it joins
            while sum(r.stored for r, _ in runs) < 24 and len(runs) < 3:
                sweeps.clear()
                runs.append((Server(broker, now=parse_instant(NOW), until_idle=True).run(),
                             len(sweeps)))
            later = Server(broker, now=parse_instant("2026-06-02T12:00:00Z"),
                           until_idle=True).run()
        finally:
            broker.close()
    assert sum(r.stored for r, _ in runs) == 24
    worked = [(r, n) for r, n in runs if r.batches]
    assert max(r.batches for r, _ in worked) >= 4
    assert sum(r.released for r, _ in worked) > 0
    # A run's first sweep learns the earliest pending expiry (May 31); none after was due.
    assert [n for _, n in worked] == [1] * len(worked), runs
    assert sum(r.tombstones for r, _ in runs) == 0
    # A new process does not know: it sweeps, and what expired gets its tombstone.
    assert later.tombstones > 0


def test_a_theme_switched_while_serve_runs_applies_to_the_next_input(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    before = f.woninginbraak(address={"wijk": "zuid"})
    after = f.woninginbraak(address={"wijk": "zuid"})
    with kafka_env(kafka_bootstrap, tmp_path / "kafka", partitions=2) as env:
        broker = env.broker()
        server = Server(broker, now=parse_instant(NOW))
        failed: list[BaseException] = []

        def run() -> None:
            try:
                server.run()
            except BaseException as exc:  # noqa: BLE001 - reported by the test below
                failed.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            _ingest(env, tmp_path / "one.jsonl", [before])
            _wait("the first event", lambda: server.report.stored == 1 or bool(failed))
            code, out = run_cli([*env.args(), "--now", "2026-05-10T11:00:00Z", "control",
                                 "theme", "on", "woninginbraak"])
            assert code == 0, out
            _ingest(env, tmp_path / "two.jsonl", [after])
            _wait("the second event", lambda: server.report.stored == 2 or bool(failed))
        finally:
            server.stopping = True
            thread.join(timeout=60)
            broker.close()
        assert not failed, failed
        decided = snapshot(env).entries("decide")
    team = {e["event_id"] for e in decided
            if e["recipient"] == "interventieteam" and e["decision"] == "release"}
    assert team == {after["event_id"]}, "only the event after the switch goes to the team"
