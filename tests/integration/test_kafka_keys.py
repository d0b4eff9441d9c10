"""Data keys on Kafka: one compacted key topic shared by every process of a deployment.

What a `serve` process sealed, another process opens; two writers that create a key for
the same subject and day at once keep both; `subject erase` writes tombstones, after which
no process (the erasing one, another running one, a fresh one) opens the fields; and the
log cleaner removes the destroyed wrapped key from Kafka's log files.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka import KafkaAdminClient, TopicPartition

from broker.app.service import Broker
from broker.backends.kafka.io import Clients, read_all
from broker.backends.kafka.keys import REFRESH_INTERVAL_S, KafkaKeyStore
from broker.clock import parse_instant
from broker.crypto.key_ids import subject_of
from broker.errors import TransientBackendError
from broker.pipeline.ingest import validate
from tests import factories as f
from tests.integration.kafka_support import (
    KafkaEnv,
    ingest_lines,
    jsonl,
    kafka_env,
    run_cli,
    serve_process,
)

NOW = "2026-05-10T12:00:00Z"
BSN = "246813579"
NAME = "KAFKA-KEY-CANARY-Q3"
SERVED_DAY = date(2027, 5, 10)  # NOW + 365 days: the retention date serve used
DAY = date(2027, 6, 1)  # a day no process has a key for yet


@pytest.fixture
def env(kafka_bootstrap: str, tmp_path: Path) -> Iterator[KafkaEnv]:
    with kafka_env(kafka_bootstrap, tmp_path / "kafka", partitions=2) as deployment:
        yield deployment


def _set_kafka(env: KafkaEnv, **values: Any) -> None:
    config = yaml.safe_load(env.config.read_text())
    config["kafka"].update(values)
    env.config.write_text(yaml.safe_dump(config))


def _keys(broker: Broker) -> KafkaKeyStore:
    assert isinstance(broker.data_keys, KafkaKeyStore)
    return broker.data_keys


def _victim_events(n: int) -> list[dict[str, Any]]:
    return [f.woninginbraak(victim={"name": NAME, "bsn": BSN, "phone": "0611223344",
                                    "consent_prevention_advice": True}) for _ in range(n)]


def _serve(env: KafkaEnv) -> None:
    proc = serve_process(env, NOW, until_idle=True)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]


def _delivered(broker: Broker) -> str:
    return json.dumps([d.as_json() for d in
                       broker.consume("preventie", None, 0, parse_instant(NOW))])


def _topic_records(env: KafkaEnv) -> list[Any]:
    reader = Clients(env.settings().kafka).reader("test-keys")
    try:
        tp = TopicPartition(f"{env.name}.keys", 0)
        return read_all(reader, [tp])[tp]
    finally:
        reader.close()


def test_processes_share_keys_and_erasure_shreds_them_everywhere(env: KafkaEnv,
                                                                 tmp_path: Path) -> None:
    other = env.broker()  # a running process that read the (empty) key topic first
    try:
        _keys(other).refresh()
        assert not _keys(other)._wrapped
        ingest_lines(env, tmp_path / "in.jsonl", jsonl(_victim_events(6)))
        _serve(env)  # a serve process seals the victim's fields under keys it creates

        subject = f"bsn:{other.sealer.subject_pseudonym('bsn', BSN)}"
        served = {r.key.decode() for r in _topic_records(env) if r.value is not None}
        assert subject in {subject_of(k) for k in served}
        assert NAME in _delivered(other)  # opened with keys another process created

        # Two writers create a key for the same subject and day before either flushes.
        first = env.broker()
        try:
            reused, _ = _keys(first).data_key(subject, SERVED_DAY, 1)
            assert reused in served  # a key that exists for (subject, date) is reused
            raw = json.dumps(_victim_events(1)[0]).encode()
            ok = validate(raw, "politie", "politie.woninginbraak", first.registry,
                          first.limits)
            sealed = [b.sealer.seal(ok.schema, ok.record, ok.event_id, DAY)
                      for b in (first, other)]
            own = [{k for k in _keys(b)._new if subject_of(k) == subject}
                   for b in (first, other)]
            assert len(own[0]) == len(own[1]) == 1
            assert own[0] != own[1]  # both keep their own key: ids are unique per key
            for b in (first, other):
                b.sealer.flush()
            for b in (first, other):  # each opens what either sealed
                for payload in sealed:
                    opened = b.sealer.open(payload)
                    assert opened.record["victim"]["name"] == NAME
                    assert not opened.erased

            code, out = run_cli([*env.args(), "--json", "--now", NOW, "subject", "erase",
                                 "--bsn", BSN, "--reason", "zaak 2026-0042"])
            assert code == 0, out
            report = json.loads(out.strip().splitlines()[-1])
            mine = {k for k in served if subject_of(k) == subject} | own[0] | own[1]
            assert report["keys_destroyed"] == len(mine)

            # Tombstones on the topic, one per destroyed key, after its record.
            last: dict[str, Any] = {}
            for record in _topic_records(env):
                last[record.key.decode()] = record.value
            assert {k for k, v in last.items() if v is None} == mine

            time.sleep(REFRESH_INTERVAL_S + 0.2)  # running processes read on within 1 s
            for b in (first, other):
                for payload in sealed:
                    opened = b.sealer.open(payload)
                    assert opened.record["victim"]["name"] is None
                    assert "victim.name" in opened.erased
                assert all(_keys(b).lookup(k) is None for k in mine)
            assert NAME not in _delivered(other)
        finally:
            first.close()
    finally:
        other.close()

    fresh = env.broker()  # a process started after the erasure never sees the keys
    try:
        keys = _keys(fresh)
        assert all(keys.lookup(k) is None for k in mine)  # reads the whole topic
        assert keys._wrapped  # it holds the keys of the other events' subjects,
        assert not any(k in keys._wrapped for k in mine)  # not the destroyed ones
        delivered = _delivered(fresh)
        assert NAME not in delivered
        # Kafka egress holds the views in clear: consume delivers the erasure notices and
        # not the records they end (which compaction removes), where the embedded backend
        # shows such a record with its erased fields
        assert '"tombstone_cause": "erasure"' in delivered
        key_id, _ = keys.data_key(subject, DAY, 1)  # the subject may come back: a new key
        assert key_id not in mine
    finally:
        fresh.close()


def _log_dir(env: KafkaEnv, topic: str) -> Path:
    admin = KafkaAdminClient(bootstrap_servers=env.bootstrap)
    try:
        described = admin.describe_log_dirs({topic: [0]})
    finally:
        admin.close()
    for node in described:
        for log_dir in node["log_dirs"]:
            for found in log_dir.get("topics", []):
                if found["name"] == topic:
                    path = Path(log_dir["log_dir"]) / f"{topic}-0"
                    if path.is_dir():
                        return path
    pytest.fail(f"the log directory of {topic} is not on this machine ({described}): the "
                "compaction check reads Kafka's segment files", pytrace=False)


def _held_in(directory: Path, blob: bytes) -> list[str]:
    held = []
    for path in directory.iterdir():
        try:
            if path.is_file() and blob in path.read_bytes():
                held.append(path.name)
        except FileNotFoundError:  # the cleaner swapped it away meanwhile
            continue
    return held


def test_the_cleaner_removes_a_destroyed_wrapped_key_from_the_log_files(
        env: KafkaEnv) -> None:
    _set_kafka(env, keys_segment_ms=1000)
    broker = env.broker()
    try:
        keys = _keys(broker)
        subject = "bsn:compaction-canary"
        key_id, _ = keys.data_key(subject, DAY, 1)
        keys.flush()
        wrapped = keys._wrapped[key_id].wrapped
        directory = _log_dir(env, f"{env.name}.keys")
        assert _held_in(directory, wrapped), "the wrapped key should be on disk before"

        time.sleep(1.2)  # the tombstone rolls the segment that holds the key record
        assert [k.key_id for k in keys.destroy_subject(subject)] == [key_id]
        time.sleep(1.2)  # and a later key record rolls the tombstone's segment
        keys.data_key("bsn:another-subject", DAY, 1)
        keys.flush()

        started = time.monotonic()
        while _held_in(directory, wrapped) and time.monotonic() - started < 120:
            time.sleep(1.0)
        seconds = time.monotonic() - started
        held = _held_in(directory, wrapped)
    finally:
        broker.close()
    print(f"wrapped key gone from the log files {seconds:.1f} s after the next roll")
    assert not held, f"still in {held} after {seconds:.0f} s"
    assert _held_in(directory, key_id.encode()), "the tombstone (key id only) stays a while"


def test_a_batch_that_used_a_key_destroyed_meanwhile_is_redone_under_a_new_key(
        env: KafkaEnv) -> None:
    sealing, erasing = env.broker(), env.broker()
    try:
        keys, subject = _keys(sealing), "bsn:destroyed-meanwhile"
        key_id, _ = keys.data_key(subject, DAY, 1)
        keys.flush()  # stored
        assert keys.data_key(subject, DAY, 1)[0] == key_id  # the next batch reuses it ...
        destroyed = _keys(erasing).destroy_subject(subject)  # ... while another erases
        assert [k.key_id for k in destroyed] == [key_id]
        with pytest.raises(TransientBackendError, match="destroyed meanwhile"):
            keys.flush()  # the batch aborts: nothing commits under a destroyed key
        redo, _ = keys.data_key(subject, DAY, 1)
        assert redo != key_id
        keys.flush()
        assert _keys(erasing).lookup(redo) is not None
        assert _keys(erasing).lookup(key_id) is None
    finally:
        sealing.close()
        erasing.close()


def test_keys_sent_ahead_are_acknowledged_by_flush_and_written_once(env: KafkaEnv) -> None:
    """The pipeline starts writing a batch's new keys before its own flushes (send_new);
    flush then waits for those acknowledgements and writes the keys created since."""
    writer, other = env.broker(), env.broker()
    try:
        keys = _keys(writer)
        early, _ = keys.data_key("bsn:sent-ahead", DAY, 1)
        keys.send_new()
        keys.send_new()  # nothing new since: no second copy
        late, _ = keys.data_key("bsn:created-after", DAY, 1)
        keys.flush()
        assert keys.data_key("bsn:sent-ahead", DAY, 1)[0] == early  # stored, reused
        assert _keys(other).lookup(early) is not None
        assert _keys(other).lookup(late) is not None
        written = [bytes(r.key).decode() for r in _topic_records(env)]
        assert (written.count(early), written.count(late)) == (1, 1)
    finally:
        writer.close()
        other.close()
