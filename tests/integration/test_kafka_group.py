"""Horizontal scale: a second `serve` joins the group, takes partitions, later takes over all.

Member A runs alone and decides part of a stream. Member B joins: the group moves two of
the four partition indices to B (A's writers for them close, B's fence them and recover
the chain heads). Both decide the second part. Then A is killed with SIGKILL: after its
session times out, B gets A's indices too (its init_transactions aborts whatever A left
open) and decides the third part. Finally B stops on SIGTERM and exits 0.

Every (event, recipient, purpose) of the three parts must be released exactly once with
its audit entry, and every audit partition chain must verify.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from tests import factories as f
from tests.integration.kafka_support import (
    KafkaEnv,
    ProcessLog,
    check_exactly_once,
    embedded_releases,
    ingest_lines,
    jsonl,
    kafka_env,
    serve_process,
    snapshot,
)

NOW = "2026-05-10T12:00:00Z"
TYPE = "politie.woninginbraak"
WIJKEN = ["noord", "oost", "zuid", "west"]
ASSIGNED = re.compile(r"\bassigned\b.*partitions=\[([\d, ]*)\]")


def _part(count: int) -> list[str]:
    return jsonl([f.woninginbraak(address={"wijk": WIJKEN[i % 4]}) for i in range(count)])


def _ingest(env: KafkaEnv, path: Path, lines: list[str]) -> None:
    ingest_lines(env, path, lines, event_type=TYPE)


def _wait(what: str, done: Callable[[], bool], logs: list[ProcessLog],
          timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n" +
                                 "\n---\n".join(log.tail() for log in logs))
        time.sleep(0.05)


def _assignments(log: ProcessLog) -> list[list[int]]:
    out = []
    for line in list(log.lines):
        match = ASSIGNED.search(line)
        if match:
            out.append([int(p) for p in match.group(1).split(",") if p.strip()])
    return out


def _lag(env: KafkaEnv) -> int:
    """Records of the ingress topic the group has not committed yet."""
    topic = f"{env.name}.ingress.{TYPE}"
    tps = [TopicPartition(topic, p) for p in range(env.partitions)]
    consumer = KafkaConsumer(bootstrap_servers=env.bootstrap, group_id=None,
                             enable_auto_commit=False)
    admin = KafkaAdminClient(bootstrap_servers=env.bootstrap)
    try:
        ends = consumer.end_offsets(tps)
        committed = admin.list_group_offsets(env.name).get(env.name, {})
    finally:
        consumer.close()
        admin.close()
    return sum(ends[tp] - (committed[tp].offset if tp in committed else 0) for tp in tps)


def test_second_member_takes_over_partitions_without_loss_or_duplicates(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    parts = [_part(36), _part(36), _part(36)]
    with kafka_env(kafka_bootstrap, tmp_path / "kafka", partitions=4, max_batch=3) as env:
        procs: list[subprocess.Popen[str]] = []
        try:
            _ingest(env, tmp_path / "part1.jsonl", parts[0])
            a = serve_process(env, NOW)
            procs.append(a)
            log_a = ProcessLog(a)
            _wait("A to commit batches", lambda: log_a.count("batch committed") >= 3, [log_a])

            b = serve_process(env, NOW)
            procs.append(b)
            log_b = ProcessLog(b)
            _wait("the group to split the partitions",
                  lambda: bool(_assignments(log_b)) and _assignments(log_b)[-1] != []
                  and log_b.count("partition writer open") >= 1, [log_a, log_b])
            _ingest(env, tmp_path / "part2.jsonl", parts[1])
            _wait("both members to decide part 2",
                  lambda: _lag(env) == 0 and log_b.count("batch committed") > 0,
                  [log_a, log_b])
            split = (_assignments(log_a)[-1], _assignments(log_b)[-1])

            a.send_signal(signal.SIGKILL)
            a.wait(timeout=30)
            _ingest(env, tmp_path / "part3.jsonl", parts[2])
            _wait("B to take over A's partitions and decide part 3",
                  lambda: _lag(env) == 0 and _assignments(log_b)[-1] == [0, 1, 2, 3],
                  [log_b], timeout=90)

            b.send_signal(signal.SIGTERM)
            out, _ = b.communicate(timeout=60)
            assert b.returncode == 0, log_b.tail()
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=30)
        result = check_exactly_once(snapshot(env))

    assert sorted(split[0] + split[1]) == [0, 1, 2, 3], split
    assert split[0], split
    assert split[1], split
    assert "serve stopped" in out
    expected = embedded_releases(tmp_path / "embedded", NOW,
                                 [("politie", TYPE, [line for p in parts for line in p])])
    assert result.releases == expected, (
        f"missing {len(expected - result.releases)}, extra {len(result.releases - expected)}")
