"""Issue 15 item 11 on Kafka: `serve` audits its own start and clean stop.

Each member appends one broker_start once a partition writer is open and one broker_stop
on a clean stop, on the chain of a partition it writes, through that partition's own
transactional id; the commands id, shared by every member and command, is not used, so
two members of one group do not fence each other. A member killed with SIGKILL leaves a
start without a stop, which is what an auditor should see.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from tests import factories as f
from tests.integration.kafka_support import (
    KafkaEnv,
    ProcessLog,
    abort_open_transactions,
    check_exactly_once,
    ingest_lines,
    jsonl,
    kafka_env,
    run_cli,
    serve_process,
    snapshot,
)

NOW = "2026-05-10T12:00:00Z"
TYPE = "politie.woninginbraak"
DETAIL = {"broker_version", "covenant_hash", "config_hash"}


def _cli_json(env: KafkaEnv, *argv: str) -> dict[str, Any]:
    code, out = run_cli([*env.args(), "--now", NOW, "--json", *argv])
    assert code == 0, out
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _ingest(env: KafkaEnv, path: Path, count: int) -> None:
    ingest_lines(env, path, jsonl([f.woninginbraak() for _ in range(count)]), event_type=TYPE)


def _policy_hash(env: KafkaEnv) -> str:
    broker = env.broker()
    try:
        return broker.plans.policy_hash
    finally:
        broker.close()


def _process_entries(env: KafkaEnv) -> dict[str, list[tuple[int, dict[str, Any]]]]:
    """broker_start / broker_stop entries with the audit partition that holds each."""
    snap = snapshot(env)
    out: dict[str, list[tuple[int, dict[str, Any]]]] = {"broker_start": [], "broker_stop": []}
    for partition, entries in snap.audit.items():
        for entry in entries:
            if entry["name"] in out:
                out[entry["name"]].append((partition, entry))
    return out


def test_serve_audits_one_start_and_one_stop_and_the_integrated_log_verifies(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    with kafka_env(kafka_bootstrap, tmp_path / "kafka", partitions=2) as env:
        _ingest(env, tmp_path / "in.jsonl", 6)
        runs = []
        for _ in range(3):  # on a loaded machine, --until-idle can stop before the group joins
            runs.append(_cli_json(env, "serve", "--until-idle"))
            if sum(r["stored"] for r in runs) >= 6:
                break
        members = [r for r in runs if r["partitions"]]  # runs that held a partition
        found = _process_entries(env)
        policy_hash = _policy_hash(env)

        assert len(members) >= 1
        assert len(found["broker_start"]) == len(found["broker_stop"]) == len(members), found
        (p_start, start), (p_stop, stop) = found["broker_start"][-1], found["broker_stop"][-1]
        assert start["trace_id"] == stop["trace_id"]  # one process's pair
        assert p_start == p_stop == 0  # the lowest partition it wrote; not the commands chain
        assert start["seq"] < stop["seq"]
        for entry in (start, stop):
            assert set(entry["detail"]) == DETAIL
            assert entry["detail"]["covenant_hash"] == policy_hash
            assert len(entry["detail"]["config_hash"]) == 64
            assert entry["detail"]["broker_version"]

        integrated = _cli_json(env, "audit", "integrate")
        verify = _cli_json(env, "audit", "verify", "--require-signed")
        assert verify["ok"], verify
        assert verify["pending"] == 0
        assert verify["entries"] == integrated["size"]
        rows = [json.loads(line) for line in run_cli(
            [*env.args(), "--json", "audit", "query", "--action", "broker_start"])[1]
            .splitlines()]
        assert len(rows) == len(members)


def _audited(log: ProcessLog, name: str) -> int:
    """Log lines saying a process entry `name` was audited (the event name is constant,
    the entry a field: test_log_redaction.py)."""
    return sum("process entry audited" in line and name in line for line in list(log.lines))


def test_two_members_of_one_group_both_audit_their_start_without_fencing(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    with kafka_env(kafka_bootstrap, tmp_path / "kafka", partitions=2, max_batch=3) as env:
        env.broker().close()  # creates the topics
        procs: list[subprocess.Popen[str]] = []
        try:
            a = serve_process(env, NOW)
            procs.append(a)
            log_a = ProcessLog(a)
            _wait(lambda: _audited(log_a, "broker_start") == 1, [log_a])
            b = serve_process(env, NOW)
            procs.append(b)
            log_b = ProcessLog(b)
            _wait(lambda: _audited(log_b, "broker_start") == 1, [log_a, log_b])
            _ingest(env, tmp_path / "in.jsonl", 24)
            _wait(lambda: log_a.count("batch committed") > 0
                  and log_b.count("batch committed") > 0, [log_a, log_b])

            a.send_signal(signal.SIGKILL)  # a crash: no stop
            a.wait(timeout=30)
            b.send_signal(signal.SIGTERM)
            b.communicate(timeout=60)
            assert b.returncode == 0, log_b.tail()
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=30)
        abort_open_transactions(env)  # A died inside a transaction; no member took over
        found = _process_entries(env)
        check_exactly_once(snapshot(env))  # every chain intact, every release once

    for log in (log_a, log_b):
        assert log.count("not written") == 0, log.tail()
        assert log.count("fenced") == 0, log.tail()
    starts = [entry for _, entry in found["broker_start"]]
    stops = [entry for _, entry in found["broker_stop"]]
    assert len(starts) == 2
    assert len({e["trace_id"] for e in starts}) == 2  # one per process
    assert len(stops) == 1  # only B stopped cleanly
    assert stops[0]["trace_id"] in {e["trace_id"] for e in starts}


def _wait(done: Any, logs: list[ProcessLog], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError("timed out:\n" + "\n---\n".join(log.tail() for log in logs))
        time.sleep(0.05)
