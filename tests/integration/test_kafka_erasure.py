"""Erasure on Kafka, checked by a canary scan of every byte the broker and Kafka hold.

A person's events carry unique canary values (name, phone, email, BSN, description). They
go through `ingest` (plaintext on the ingress topics), `serve` (stored sealed, released as
plain views on the compacted egress topics) and `consume`. Then `subject erase` destroys
the person's keys and writes erasure notices (Kafka tombstones: null value, the record's
key), serve purges the consumed ingress records, Kafka deletes the segments that held
them, the log cleaner compacts the egress topics, and no canary may remain in the
broker's data directory, its logs, or any file of the Kafka node's directory (segments of
every topic, egress included, indexes, the JVM log).

Compaction needs the ended records and their tombstones out of the active segment: the
egress topics are created with a 1 s segment.ms (kafka.egress_segment_ms), the session
node's cleaner looks every second (conftest.py NODE_OVERRIDES), and one more release per
stream after the erasure (as steady traffic would) rolls the active segments.

Segment deletion needs a rolled segment and a retention check: the ingress topics are
created with a 1 s segment.ms (kafka.ingress_segment_ms), the session node checks every
second (from 1 s after start, not 30 s) and deletes files 1 s after (conftest.py
NODE_OVERRIDES), and one filler record per ingress partition (as steady traffic would)
rolls the active segments. A second test shows the purge never reaches input the group
has not committed.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from broker.backends.kafka.event_log import KafkaEventLog
from broker.backends.kafka.io import header, read_all
from broker.backends.kafka.purge import purge_once
from tests import factories as f
from tests.integration.kafka_support import (
    KafkaEnv,
    check_exactly_once,
    jsonl,
    kafka_env,
    lines_file,
    run_cli,
    serve_process,
    snapshot,
)

NOW = "2026-05-10T12:00:00Z"
BSN = "135792468"
CANARIES = ["CANARY-KAFKA-NAAM-Z9", "0611223344", "canary.z9@example.nl", BSN,
            "CANARY-KAFKA-DESC-Z9"]
SEGMENT_MS = 1000
PURGE_DEADLINE_S = 90.0


def held(roots: list[Path]) -> dict[str, list[str]]:
    """Canary -> the files under `roots` that contain it."""
    found: dict[str, list[str]] = {}
    for root in roots:
        # os.walk, not Path.rglob: Kafka removes whole `-delete` directories while we walk,
        # and rglob raises for a directory that vanished; os.walk skips it.
        files = sorted(Path(top) / name for top, _, names in os.walk(root) for name in names)
        for path in files:
            try:
                data = path.read_bytes()
            except FileNotFoundError:  # Kafka deleted it while we looked
                continue
            for canary in CANARIES:
                if canary.encode() in data:
                    found.setdefault(canary, []).append(str(path.relative_to(root)))
    return found


def configure(env: KafkaEnv) -> None:
    config = yaml.safe_load(env.config.read_text())
    config["kafka"]["ingress_segment_ms"] = SEGMENT_MS
    config["kafka"]["egress_segment_ms"] = SEGMENT_MS
    env.config.write_text(yaml.safe_dump(config))


def in_egress(found: dict[str, list[str]], env: KafkaEnv) -> dict[str, list[str]]:
    """The part of `held` that is in the egress topics' files."""
    marker = f"{env.name}.egress."
    out = {canary: [p for p in paths if marker in p] for canary, paths in found.items()}
    return {canary: paths for canary, paths in out.items() if paths}


def release_on_every_stream(env: KafkaEnv, tmp_path: Path) -> int:
    """One more release on each stream the person's records went to (other people's
    events), so each egress topic's active segment, older than segment.ms, rolls."""
    inputs = [("politie", "politie.woninginbraak", f.woninginbraak()),
              ("om", "om.gebiedsverbod", f.gebiedsverbod()),
              ("om", "om.detentie_uitstroom", f.detentie_uitstroom())]
    for source, event_type, event in inputs:
        path = lines_file(tmp_path / f"later-{event_type}.jsonl", jsonl([event]))
        code, out = run_cli([*env.args(), "ingest", "--source", source, "--type",
                             event_type, str(path)])
        assert code == 0, out
    return len(inputs)


def serve_until_idle(env: KafkaEnv, expect: int) -> str:
    """`serve --until-idle` until it has consumed `expect` records; its output. (On a busy
    machine a first join can stay empty past serve's grace period, and serve then ends
    idle with nothing consumed: run it again.)"""
    logs, consumed = "", 0
    for _ in range(3):
        proc = serve_process(env, NOW, until_idle=True)
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-3000:]
        logs += out + err
        match = re.search(r"(\d+) consumed", out)
        consumed += int(match.group(1)) if match else 0
        if consumed >= expect:
            return logs
    raise AssertionError(f"serve consumed {consumed} of {expect} records: {logs[-3000:]}")


def consume_all(env: KafkaEnv, recipients: list[str]) -> str:
    out = ""
    for recipient in recipients:
        code, text = run_cli([*env.args(), "--now", NOW, "consume", "--recipient", recipient])
        assert code == 0, text
        out += text
    return out


def fill_every_ingress_partition(env: KafkaEnv) -> int:
    """One record (bad input: it is quarantined, sealed) on every ingress partition, so each
    active segment, older than segment.ms by now, rolls."""
    producer = KafkaProducer(bootstrap_servers=env.bootstrap)
    try:
        broker = env.broker()
        topics = broker.log.layout.ingress_topics()  # type: ignore[attr-defined]
        broker.close()
        for topic in topics:
            for partition in range(env.partitions):
                producer.send(topic, b"filler: not an event", partition=partition)
        producer.flush()
    finally:
        producer.close()
    return len(topics) * env.partitions


def _released_about(snap: Any, pseudonym: str) -> set[tuple[str, str, int]]:
    return {(e["recipient"], e["purpose"], e["egress_offset"]) for e in
            snap.entries("decide") if e["decision"] == "release"
            and pseudonym in [s["pseudonym"] for s in e["data_subjects"]]}


def _uncompacted(snap: Any, pseudonym: str) -> set[tuple[str, str, int]]:
    kept = {(r, p, record.offset) for (r, p), records in snap.egress.items()
            for record in records}
    return _released_about(snap, pseudonym) & kept


def test_erasure_on_kafka_leaves_no_plaintext_anywhere(
        kafka_bootstrap: str, kafka_node: Any, tmp_path: Path,
        capfd: pytest.CaptureFixture[str]) -> None:
    if kafka_node is None:
        pytest.skip("the canary scan reads the Kafka node's log directory, which only the "
                    "launcher's own node exposes (KAFKA_BOOTSTRAP_SERVERS is set)")
    kafka_dir = Path(kafka_node.workdir)
    logs = ""
    with kafka_env(kafka_bootstrap, tmp_path / "kafka", partitions=2) as env:
        configure(env)
        name, phone, email, _, description = CANARIES
        inputs = [
            ("politie", "politie.woninginbraak", [
                f.woninginbraak(victim={"name": name, "bsn": BSN, "phone": phone,
                                        "email": email, "consent_prevention_advice": True}),
                f.woninginbraak()]),
            ("om", "om.gebiedsverbod", [
                f.gebiedsverbod(person={"name": name, "bsn": BSN,
                                        "description": description})]),
            ("om", "om.detentie_uitstroom", [
                f.detentie_uitstroom(person={"name": name, "bsn": BSN})]),
        ]
        for source, event_type, events in inputs:
            path = lines_file(tmp_path / f"{event_type}.jsonl", jsonl(events))
            code, out = run_cli([*env.args(), "ingest", "--source", source, "--type",
                                 event_type, str(path)])
            assert code == 0, out
        assert held([kafka_dir]), "the canaries should be on the ingress topics first"
        logs += serve_until_idle(env, sum(len(events) for _, _, events in inputs))
        # the views are on the egress topics in clear: the scan sees them there
        assert set(in_egress(held([kafka_dir]), env)) == set(CANARIES), \
            in_egress(held([kafka_dir]), env)

        broker = env.broker()
        recipients = list(broker.covenant.recipients)
        pseudonym = broker.sealer.subject_pseudonym("bsn", BSN)
        broker.close()
        before = consume_all(env, recipients)
        for canary in CANARIES[:3] + CANARIES[4:]:
            assert canary in before, canary  # the recipients did get the data

        started = time.perf_counter()
        code, out = run_cli([*env.args(), "--json", "--now", NOW, "subject", "erase",
                             "--bsn", BSN, "--reason", "AVG art. 17 verzoek"])
        erase_s = time.perf_counter() - started
        assert code == 0, out
        erased = json.loads(out.strip().splitlines()[-1])
        # the erasure use case ran the Kafka ingress purge (None: not run, or it failed)
        assert isinstance(erased["ingress_partitions_purged"], int), erased
        code, out = run_cli([*env.args(), "--json", "--now", NOW, "subject", "erase",
                             "--bsn", BSN, "--reason", "nogmaals"])
        assert code == 0, out
        again = json.loads(out.strip().splitlines()[-1])

        # let the purge and the cleaner run: fillers roll the ingress segments and later
        # releases the egress ones; serve ingests them and purges
        time.sleep(SEGMENT_MS / 1000 * 1.5)  # the tombstones' segments are due to roll
        fillers = fill_every_ingress_partition(env) + release_on_every_stream(env, tmp_path)
        started = time.perf_counter()
        logs += serve_until_idle(env, fillers)  # ingests the fillers, purges on its way out
        served = time.perf_counter()
        left = held([kafka_dir])
        egress_gone: float | None = None
        while left and time.perf_counter() - started < PURGE_DEADLINE_S:
            time.sleep(0.2)
            left = held([kafka_dir])
            if egress_gone is None and not in_egress(left, env):
                egress_gone = time.perf_counter()
        gone = time.perf_counter()
        egress_gone = egress_gone or gone

        after = consume_all(env, recipients)
        snap = snapshot(env)
        for _ in range(20):  # the streams without a canary (surveillance) compact as well
            if not _uncompacted(snap, pseudonym):
                break
            time.sleep(1)
            snap = snapshot(env)
        exactly = check_exactly_once(snap)  # every audit chain verifies, tombstones once
        code, out = run_cli([*env.args(), "audit", "verify"])
        assert code == 0, out
        data_dir = env.data_dir
        found_broker = held([data_dir])
        out_text, err_text = capfd.readouterr()

    print(f"\nerase: {erase_s * 1000:.0f} ms (CLI in-process; the command reports "
          f"{erased['seconds'] * 1000:.0f} ms: keys, audit scan, notices, ingress purge); "
          f"filler serve: {served - started:.1f} s; segments gone "
          f"{gone - served:.1f} s after it exited (egress compacted "
          f"{egress_gone - served:.1f} s after)")
    assert left == {}, f"plaintext left in the Kafka log directory: {left}"
    assert "ingress purged" in logs
    assert found_broker == {}, f"plaintext left in the broker's data directory: {found_broker}"
    for canary in CANARIES:
        assert canary not in after, canary
        assert canary not in logs + out_text + err_text, canary
    # consume delivers the notices, and no longer the records they end (compacted away)
    delivered = [json.loads(line) for line in after.splitlines() if line.startswith("{")]
    assert sum(1 for d in delivered if d.get("tombstone_cause") == "erasure") >= 6

    # the notices: one per record released about the person, on its recipient's topic
    released = _released_about(snap, pseudonym)
    assert len(released) >= 6
    notices = {}
    for (recipient, purpose), records in snap.egress.items():
        for record in records:
            if header(record, "kind") == "tombstone":
                target = (recipient, purpose, snap.tombstone_for[(recipient, purpose,
                                                                   record.offset)])
                notices[target] = record
    assert set(notices) == released
    # Kafka tombstones: null value, the ended record's key, the cause in a header; and
    # compaction removed every record they end
    for record in notices.values():
        assert record.value is None
        assert header(record, "cause") == "erased"
        assert len(record.key) == 32
    assert not _uncompacted(snap, pseudonym), "an erased record is still on its topic"
    assert Counter(erased["erasure_notices"]) == Counter(
        f"{r}/{p}" for r, p, _ in released)
    assert exactly.tombstones == len(released)
    assert erased["keys_destroyed"] >= 1
    assert again["keys_destroyed"] == 0
    assert again["erasure_notices"] == {}  # erasing twice sends nothing new
    audited = snap.entries("tombstone")
    assert len(audited) == len(released)
    assert all(e["decision"] == "erase" for e in audited)
    assert [e["detail"]["notices"] for e in snap.entries("erasure")] == [
        str(len(released)), "0"]


def test_the_purge_deletes_only_what_the_group_has_committed(kafka_bootstrap: str,
                                                               tmp_path: Path) -> None:
    with kafka_env(kafka_bootstrap, tmp_path / "kafka", partitions=1) as env:
        consumed = [f.woninginbraak() for _ in range(3)]
        waiting = [f.woninginbraak() for _ in range(2)]
        path = lines_file(tmp_path / "first.jsonl", jsonl(consumed))
        assert run_cli([*env.args(), "ingest", "--source", "politie", "--type",
                        "politie.woninginbraak", str(path)])[0] == 0
        logs = serve_until_idle(env, len(consumed))  # purges up to its commit on exit
        assert "ingress purged" in logs
        path = lines_file(tmp_path / "later.jsonl", jsonl(waiting))
        assert run_cli([*env.args(), "ingest", "--source", "politie", "--type",
                        "politie.woninginbraak", str(path)])[0] == 0

        broker = env.broker()
        try:
            log = broker.log
            assert isinstance(log, KafkaEventLog)
            tp = TopicPartition(log.layout.names.ingress("politie.woninginbraak"), 0)
            # up to the committed offset, not the end: 2 more records wait there
            assert purge_once(log.clients, log.layout) == {tp: len(consumed)}
            reader = KafkaConsumer(bootstrap_servers=env.bootstrap, group_id=None,
                                   enable_auto_commit=False, auto_offset_reset="earliest")
            try:
                start = reader.beginning_offsets([tp])[tp]
                left = [json.loads(r.value)["event_id"] for r in read_all(reader, [tp])[tp]]
            finally:
                reader.close()
        finally:
            broker.close()

    assert start == len(consumed)  # the log starts at the group's committed offset
    assert left == [e["event_id"] for e in waiting]  # unconsumed input stays readable
