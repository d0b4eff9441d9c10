"""Corrections and withdrawals (AVG art. 19) on a real Kafka.

The shared scenarios of tests/unit/test_corrections.py (its SHARED names) are collected
again here with the `backend` fixture "kafka": each runs through
Broker.ingest_settled / ingest_revisions_settled, which publish to ingress (revisions with
their `action` header, keyed by the event they revise) and run `serve` until idle, so the
same asserts hold on both backends. The tests below add what only Kafka has: what a plain
read_committed consumer of an egress topic sees (a Kafka tombstone with the record's key
and a cause header), an event and its corrections judged in one batch, and a crash in the
middle of applying revisions that writes no second retraction when redone.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from broker.app.service import Broker
from broker.backends.kafka.io import header, read_all
from broker.backends.kafka.revisions import home_partition
from broker.clock import to_millis
from tests import factories as f
from tests.integration.kafka_support import (
    KafkaEnv,
    ProcessLog,
    check_exactly_once,
    run_cli,
    serve_process,
    snapshot,
)
from tests.unit import test_corrections as shared
from tests.unit.test_corrections import broker  # noqa: F401 - the fixture the scenarios take

SCENARIOS = {name: getattr(shared, name) for name in shared.SHARED}
globals().update(SCENARIOS)

NOW, LATER = shared.NOW, shared.LATER


@pytest.fixture(params=["kafka"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_every_shared_scenario_is_collected_on_kafka() -> None:
    assert len(SCENARIOS) == 9
    assert all(name in globals() for name in SCENARIOS)


def _egress(built: Broker, recipient: str, purpose: str) -> list[Any]:
    """The egress topic as a recipient's own Kafka client reads it (read_committed)."""
    kafka = built.settings.kafka
    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             isolation_level="read_committed")
    try:
        tp = TopicPartition(f"{kafka.topic_prefix}egress.{recipient}.{purpose}", 0)
        return read_all(consumer, [tp])[tp]
    finally:
        consumer.close()


def test_a_retraction_is_a_kafka_tombstone_with_the_records_key_and_its_cause(
        kafka_broker: Broker) -> None:
    burglary, ban = f.woninginbraak(), f.gebiedsverbod()
    shared.ingest(kafka_broker, "politie.woninginbraak", burglary)
    shared.ingest(kafka_broker, "om.gebiedsverbod", ban)
    fixed = shared.revise(kafka_broker, "correction", "politie", "politie.woninginbraak",
                          dict(burglary, modus_operandi="flipperen"))
    lifted = shared.revise(kafka_broker, "withdrawal", "om", "om.gebiedsverbod",
                           shared.withdrawal(ban["event_id"]))
    assert (fixed.accepted, fixed.retractions, lifted.accepted, lifted.retractions) == (
        1, 3, 1, 3)

    surveillance = _egress(kafka_broker, "boa-hor-noord", "surveillance-woninginbraak")
    assert [(r.value is None, header(r, "kind"), header(r, "cause"))
            for r in surveillance] == [(False, "record", None),
                                       (True, "tombstone", "rectified"),
                                       (False, "record", None)]
    assert len({r.key for r in surveillance}) == 1  # the corrected record replaces it
    ban_stream = _egress(kafka_broker, "boa-hor-oost", "handhaving-gebiedsverbod")
    assert [(r.value is None, header(r, "cause")) for r in ban_stream] == [
        (False, None), (True, "withdrawn")]
    assert ban_stream[1].key == ban_stream[0].key
    entries = shared.audit(kafka_broker, "tombstone")
    assert Counter(e["reason_code"] for e in entries) == {"rectified": 3, "withdrawn": 3}
    assert all(e["egress_offset"] is not None for e in entries)
    assert kafka_broker.verify_audit().ok


def test_an_event_and_two_corrections_in_one_batch_apply_in_order(
        kafka_broker: Broker) -> None:
    """Published together, judged in one run: the event is stored before its corrections
    are judged, and the second correction retracts the first one's record."""
    burglary = f.woninginbraak()
    first = dict(burglary, modus_operandi="flipperen")
    second = dict(burglary, modus_operandi="raam_forceren")
    publisher = kafka_broker.backend.ingress
    assert publisher is not None
    publisher.publish("politie", "politie.woninginbraak", f.numbered(burglary))
    publisher.publish("politie", "politie.woninginbraak", f.numbered(first, second),
                      action="correction")
    report = shared.revise(kafka_broker, "correction", "politie", "politie.woninginbraak",
                           now=LATER)  # nothing more: settles what was published
    assert report.accepted == 2
    assert report.quarantined == []
    noord = shared.stream(kafka_broker, "boa-hor-noord")
    assert [(d.kind, d.record.get("modus_operandi"), d.record.get("cause"))
            for d in noord] == [("record", "cilinder_trekken", None),
                                ("tombstone", None, "rectified"),
                                ("record", "flipperen", None),
                                ("tombstone", None, "rectified"),
                                ("record", "raam_forceren", None)]
    assert noord[3].record["released_offset"] == noord[2].offset
    assert len(shared.audit(kafka_broker, "correction")) == 2


def test_a_correction_before_its_event_in_one_batch_is_an_unknown_original(
        kafka_broker: Broker) -> None:
    """Order holds within a batch: a correction judged before its original was stored is
    quarantined, as it would be in a batch of its own."""
    burglary = f.woninginbraak()
    publisher = kafka_broker.backend.ingress
    assert publisher is not None
    publisher.publish("politie", "politie.woninginbraak",
                      f.numbered(dict(burglary, modus_operandi="flipperen")),
                      action="correction")
    publisher.publish("politie", "politie.woninginbraak", f.numbered(burglary))
    report = shared.revise(kafka_broker, "correction", "politie", "politie.woninginbraak")
    assert [q.reason_code for q in report.quarantined] == ["unknown_original"]
    assert report.accepted == 0
    assert report.decided.events == 1
    assert [d.kind for d in shared.stream(kafka_broker, "boa-hor-noord")] == ["record"]


def test_cli_ingest_correction_and_withdrawal_on_kafka(kafka_bootstrap: str,
                                                       tmp_path: Path) -> None:
    env = KafkaEnv(kafka_bootstrap, tmp_path / "kafka", partitions=2)
    try:
        burglary, ban = f.woninginbraak(), f.gebiedsverbod()
        files = {"b": [burglary], "v": [ban],
                 "fix": [dict(burglary, modus_operandi="flipperen")],
                 "lift": [json.loads(shared.withdrawal(ban["event_id"])),
                          json.loads(shared.withdrawal(f.new_id()))]}
        for name, lines in files.items():
            (tmp_path / f"{name}.jsonl").write_text(
                "".join(json.dumps(line) + "\n" for line in lines))
        for source, kind, name in (("politie", "politie.woninginbraak", "b"),
                                   ("om", "om.gebiedsverbod", "v")):
            assert run_cli([*env.args(), "ingest", "--source", source, "--type", kind,
                            str(tmp_path / f"{name}.jsonl")])[0] == 0
        code, out = run_cli([*env.args(), "--now", NOW.isoformat(), "serve",
                             "--until-idle"])
        assert code == 0, out
        code, out = run_cli([*env.args(), "--json", "--now", LATER.isoformat(), "ingest",
                             "--source", "politie", "--type", "politie.woninginbraak",
                             "--correction", str(tmp_path / "fix.jsonl")])
        assert code == 0, out
        done = json.loads(out)
        assert (done["action"], done["accepted"], done["retractions"]) == ("correction", 1, 3)
        code, out = run_cli([*env.args(), "--json", "--now", LATER.isoformat(), "ingest",
                             "--source", "om", "--type", "om.gebiedsverbod",
                             "--withdrawal", str(tmp_path / "lift.jsonl")])
        assert code == 0, out
        done = json.loads(out)
        assert (done["action"], done["accepted"], done["retractions"]) == ("withdrawal", 1, 3)
        assert [q["reason_code"] for q in done["quarantine"]] == ["unknown_original"]
    finally:
        env.cleanup()


WITHDRAWALS = 6
# (committed batches to wait for, then seconds): kills between and inside transactions
CRASH_POINTS = ((1, 0.0), (1, 0.03), (1, 0.08), (2, 0.01))


def _kill_at(env: KafkaEnv, batches: int, delay: float) -> int:
    """Start serve, wait for `batches` committed batches (or 30 s), wait `delay`, kill -9;
    the batches it committed."""
    child = serve_process(env, LATER.isoformat())
    log = ProcessLog(child)
    deadline = time.monotonic() + 30
    while log.count("batch committed") < batches and child.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    log.thread.join(timeout=5)
    return log.count("batch committed")


def test_a_crash_while_applying_withdrawals_writes_no_second_retraction(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    """`serve` killed with SIGKILL while it applies withdrawals one batch at a time
    (max_batch 1), then restarted until idle: each released record of a withdrawn event
    has exactly one retraction, with one audit entry, and every chain is intact."""
    # a static member (instance_id, as in test_kafka_crash): a restart takes the killed
    # member's place at once instead of waiting out its session
    env = KafkaEnv(kafka_bootstrap, tmp_path / "kafka", partitions=2, max_batch=1,
                   instance_id="crash")
    try:
        bans = [f.gebiedsverbod() for _ in range(WITHDRAWALS)]
        built = env.broker()
        try:
            for ban in bans:
                shared.ingest(built, "om.gebiedsverbod", ban)
            publisher = built.backend.ingress
            assert publisher is not None
            publisher.publish("om", "om.gebiedsverbod",
                              f.numbered(*(shared.withdrawal(b["event_id"]) for b in bans)),
                              action="withdrawal")
        finally:
            built.close()
        killed = [_kill_at(env, k, delay) for k, delay in CRASH_POINTS]
        code, out = run_cli([*env.args(), "--json", "--now", LATER.isoformat(), "serve",
                             "--until-idle"])
        assert code == 0, out
        assert any(batches > 0 for batches in killed), killed  # a kill after a commit

        snap = snapshot(env)
        check_exactly_once(snap)
        retractions = [e for e in snap.entries("tombstone") if e["reason_code"] == "withdrawn"]
        ended = Counter((e["recipient"], e["purpose"], e["detail"]["released_offset"])
                        for e in retractions)
        assert len(ended) == 3 * WITHDRAWALS  # noord, oost and interventieteam per ban
        assert set(ended.values()) == {1}
        assert len(snap.tombstone_for) == 3 * WITHDRAWALS
        targets = Counter((r, p, target) for (r, p, _), target in snap.tombstone_for.items())
        assert set(targets.values()) == {1}  # one tombstone per released record
        assert len(snap.entries("withdrawal")) == WITHDRAWALS
    finally:
        env.cleanup()


def test_replay_on_kafka_names_its_input_order(kafka_broker: Broker) -> None:
    """Replay reads the revisions topic: a withdrawal stored after the event it withdraws
    comes after it in the rebuilt stream (the store position it names)."""
    ban = f.gebiedsverbod()
    shared.ingest(kafka_broker, "om.gebiedsverbod", ban)
    shared.revise(kafka_broker, "withdrawal", "om", "om.gebiedsverbod",
                  shared.withdrawal(ban["event_id"]))
    (revision,) = kafka_broker.revision_reader.read_revisions(-1, 10)
    original = kafka_broker.revision_reader.originals("om.gebiedsverbod", [ban["event_id"]])
    assert revision.original_offset == original[ban["event_id"]].offset
    assert revision.after_store_offset >= revision.original_offset
    assert revision.ingested_ms == to_millis(LATER)


def test_an_unknown_action_header_is_quarantined_not_a_crash(kafka_broker: Broker) -> None:
    """A source controls the action header: any value but correction or withdrawal (bytes
    that are not UTF-8 too) is quarantined as unknown_action, and serve goes on."""
    ban = f.gebiedsverbod()
    shared.ingest(kafka_broker, "om.gebiedsverbod", ban)
    kafka = kafka_broker.settings.kafka
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers)
    lift = shared.withdrawal(ban["event_id"]).encode()
    try:
        for action in (b"delete", b"\xff\xfe", b"", b"Withdrawal"):
            producer.send(f"{kafka.topic_prefix}ingress.om.gebiedsverbod", lift,
                          key=ban["event_id"].encode(),
                          headers=[("action", action), ("source", b"om")]).get(timeout=30)
    finally:
        producer.close()
    report = shared.revise(kafka_broker, "withdrawal", "om", "om.gebiedsverbod", lift.decode())
    assert sorted(q.reason_code for q in report.quarantined) == ["unknown_action"] * 4
    assert (report.accepted, report.retractions) == (1, 3)


def test_a_withdrawal_on_the_wrong_partition_is_forwarded_to_its_original(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    """Two partitions: a withdrawal produced to the partition that does not hold its
    original is forwarded there (as an event is) and judged against it."""
    env = KafkaEnv(kafka_bootstrap, tmp_path / "kafka", partitions=2)
    built = env.broker()
    try:
        ban = f.gebiedsverbod()
        shared.ingest(built, "om.gebiedsverbod", ban)
        home = home_partition(ban["event_id"], 2)
        kafka = built.settings.kafka
        producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers)
        try:
            producer.send(f"{kafka.topic_prefix}ingress.om.gebiedsverbod",
                          shared.withdrawal(ban["event_id"]).encode(), partition=1 - home,
                          headers=[("action", b"withdrawal"), ("source", b"om")]
                          ).get(timeout=30)
        finally:
            producer.close()
        report = shared.revise(built, "withdrawal", "om", "om.gebiedsverbod")
        assert (report.accepted, report.retractions, report.quarantined) == (1, 3, [])
        (revision,) = built.revision_reader.read_revisions(-1, 10)
        assert revision.seq % 2 == home  # stored on the original's partition
    finally:
        built.close()
        env.cleanup()


def test_the_subject_report_shows_the_chain_once_integrated(kafka_bootstrap: str,
                                                            tmp_path: Path) -> None:
    """On Kafka the subject report reads the integrated log: after `audit integrate` it
    shows the withdrawal's retractions under disclosures, as on the embedded backend."""
    env = KafkaEnv(kafka_bootstrap, tmp_path / "kafka", partitions=2)
    built = env.broker()
    try:
        burglary = f.woninginbraak()
        shared.ingest(built, "politie.woninginbraak", burglary)
        shared.revise(built, "withdrawal", "politie", "politie.woninginbraak",
                      shared.withdrawal(burglary["event_id"]))
        built.close()
        code, out = run_cli([*env.args(), "--json", "audit", "integrate"])
        assert code == 0, out
        code, out = run_cli([*env.args(), "--json", "--now", LATER.isoformat(), "audit",
                             "subject-report", "--bsn", burglary["victim"]["bsn"]])
        assert code == 0, out
        report = json.loads(out)
        disclosed = {(i["action"], i["decision"], i["reason_code"])
                     for i in report["disclosures"]}
        assert ("tombstone", "retract", "withdrawn") in disclosed
        assert ("decide", "release", None) in disclosed
    finally:
        built.close()
        env.cleanup()
