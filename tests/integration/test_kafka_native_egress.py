"""A recipient's app reads its egress topic with tools the project did not write (issue 12).

A plain kafka-python consumer (read_committed, no broker code) reads every egress topic
of a deployment and decodes each value with the Apache `avro` package, from nothing but
the view schemas as `schemas show` prints them. What it decodes equals what `consume`
delivers; every key is the record's per-purpose ref; expiry and erasure arrive as Kafka
tombstones (null value, the record's key, a `cause` header); and nothing on any topic
(key, header or value) links one event's records across purposes: the same burglary on
three streams has three unrelated keys, and its records share no header value but the
view-independent ones (kind, released_ms).
"""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import avro.io
import avro.schema
from kafka import KafkaConsumer, TopicPartition

from tests import factories as f
from tests.integration.kafka_support import (
    KafkaEnv,
    jsonl,
    kafka_env,
    lines_file,
    run_cli,
    serve_process,
    snapshot,
)

NOW = "2026-05-10T12:00:00Z"
LATER = "2026-05-25T12:00:00Z"  # the area ban below has ended: its records expire
BSN = "246813579"
STREET = "Koppelstraat"  # only the linked burglary happened here
HEADERS = {"view", "kind", "released_ms", "expires_on", "cause", "broker_link",
           "traceparent"}
VIEW_INDEPENDENT = {"kind", "released_ms"}  # the same for every record of one decision


def view_schemas() -> dict[str, avro.schema.Schema]:
    """Avro full name -> schema, parsed by the avro package from what `schemas list` and
    `schemas show` print: all a recipient needs, without the repository."""
    code, listed = run_cli(["--json", "schemas", "list"])
    assert code == 0, listed
    out = {}
    for entry in json.loads(listed)["schemas"]:
        if entry["kind"] != "views" or entry["version"] != "current":
            continue
        code, shown = run_cli(["schemas", "show", entry["fingerprint"]])
        assert code == 0, shown
        out[entry["name"]] = avro.schema.parse(shown)
    return out


def decode(value: bytes, schema: avro.schema.Schema) -> dict[str, Any]:
    """Avro single-object encoding: C3 01, an 8-byte fingerprint, the binary datum. (The
    avro package's own fingerprint of a schema with logical types differs from the spec's,
    so the header names the view and the fingerprint is not looked up.)"""
    assert value[:2] == b"\xc3\x01", value[:10]
    datum = avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(io.BytesIO(value[10:])))
    assert isinstance(datum, dict)
    return datum


def same(decoded: Any, delivered: Any) -> bool:
    """An avro-decoded value against consume's JSON rendering of it."""
    if isinstance(decoded, dict):
        return isinstance(delivered, dict) and decoded.keys() == delivered.keys() and all(
            same(v, delivered[k]) for k, v in decoded.items())
    if isinstance(decoded, list):
        return isinstance(delivered, list) and len(decoded) == len(delivered) and all(
            same(a, b) for a, b in zip(decoded, delivered, strict=True))
    if isinstance(decoded, datetime):
        instant = datetime.fromisoformat(delivered)
        return decoded.astimezone(UTC) == instant.astimezone(UTC)
    if isinstance(decoded, date):
        return decoded.isoformat() == delivered
    return bool(decoded == delivered)


def read_every_egress_topic(env: KafkaEnv) -> dict[str, list[Any]]:
    consumer = KafkaConsumer(bootstrap_servers=env.bootstrap, group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             isolation_level="read_committed")
    try:
        topics = sorted(t for t in consumer.topics() if t.startswith(f"{env.name}.egress."))
        tps = [TopicPartition(t, 0) for t in topics]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: dict[str, list[Any]] = {t: [] for t in topics}
        for _ in range(200):
            if all(consumer.position(tp) >= ends[tp] for tp in tps):
                break
            for tp, records in consumer.poll(timeout_ms=500).items():
                out[tp.topic].extend(records)
        assert all(consumer.position(tp) >= ends[tp] for tp in tps), "did not read to the end"
        return out
    finally:
        consumer.close()


def serve(env: KafkaEnv, expect: int) -> None:
    consumed = 0
    for _ in range(3):
        proc = serve_process(env, NOW, until_idle=True)
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-3000:]
        match = re.search(r"(\d+) consumed", out)
        consumed += int(match.group(1)) if match else 0
        if consumed >= expect:
            return
    raise AssertionError(f"serve consumed {consumed} of {expect} records")


def consume(env: KafkaEnv, recipients: list[str], now: str) -> dict[tuple[str, str, int], Any]:
    out = {}
    for recipient in recipients:
        code, text = run_cli([*env.args(), "--now", now, "consume", "--recipient", recipient])
        assert code == 0, text
        for line in text.splitlines():
            if line.startswith("{"):
                item = json.loads(line)
                out[(recipient, item["purpose"], item["offset"])] = item
    return out


def test_any_kafka_client_and_avro_library_reads_the_egress_topics(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    linked = f.woninginbraak(address={"street": STREET, "house_number": "3",
                                      "postcode": "1181 AB", "city": "Amstelveen",
                                      "wijk": "noord"})
    erased = f.woninginbraak(victim={"name": "Eva Gewist", "bsn": BSN, "phone": "0699887766",
                                     "email": "eva@example.nl",
                                     "consent_prevention_advice": True})
    ending = f.gebiedsverbod(valid_until="2026-05-20")
    inputs = [("politie", "politie.woninginbraak", [linked, erased]),
              ("om", "om.gebiedsverbod", [ending, f.gebiedsverbod()]),
              ("om", "om.detentie_uitstroom", [f.detentie_uitstroom()]),
              ("gemeente", "gemeente.boa_waarneming", [f.boa_waarneming()])]
    with kafka_env(kafka_bootstrap, tmp_path / "kafka", partitions=2) as env:
        for source, event_type, events in inputs:
            path = lines_file(tmp_path / f"{event_type}.jsonl", jsonl(events))
            code, out = run_cli([*env.args(), "ingest", "--source", source, "--type",
                                 event_type, str(path)])
            assert code == 0, out
        serve(env, sum(len(events) for _, _, events in inputs))
        broker = env.broker()
        recipients = list(broker.covenant.recipients)
        pseudonym = broker.sealer.subject_pseudonym("bsn", BSN)
        broker.close()
        delivered = consume(env, recipients, NOW)
        code, out = run_cli([*env.args(), "--now", NOW, "subject", "erase", "--bsn", BSN,
                             "--reason", "AVG art. 17"])
        assert code == 0, out
        later = consume(env, recipients, LATER)  # sweeps the ended area ban: tombstones
        topics = read_every_egress_topic(env)
        snap = snapshot(env)
        stream_of = {f"{env.name}.egress.{r}.{p}": (r, p) for r, p in snap.egress}

    schemas = view_schemas()
    decoded: dict[tuple[str, str, int], dict[str, Any]] = {}
    tombstones: dict[tuple[str, str, int], Any] = {}
    refs: dict[tuple[str, str], set[bytes]] = {}
    for topic, records in topics.items():
        recipient, purpose = stream_of[topic]
        for record in records:
            names = {name for name, _ in record.headers}
            assert names <= HEADERS, names - HEADERS  # no event_offset, ref or key id
            head = dict(record.headers)
            assert record.key is not None
            assert re.fullmatch(rb"[0-9a-f]{32}", record.key)
            if record.value is None:
                assert head["kind"] == b"tombstone"
                tombstones[(recipient, purpose, record.offset)] = record
                continue
            assert head["kind"] == b"record"
            view = decode(record.value, schemas[head["view"].decode()])
            assert view["ref"].encode() == record.key  # keyed by its per-purpose ref
            decoded[(recipient, purpose, record.offset)] = view
            refs.setdefault((recipient, purpose), set()).add(record.key)

    # every released record decodes, and equals what consume delivered
    released = {k for k, item in delivered.items() if not item.get("tombstone")}
    assert set(decoded) == released
    assert len(decoded) >= 12
    for key, view in decoded.items():
        assert same(view, delivered[key]["record"]), (key, view, delivered[key]["record"])
    print(f"\navro package decoded {len(decoded)} of {len(decoded)} released records on "
          f"{len(topics)} egress topics; {len(tombstones)} tombstones")

    # tombstones: null value, the key of a record of their stream, the cause in a header
    causes = {key: dict(record.headers)["cause"] for key, record in tombstones.items()}
    for (recipient, purpose, _), record in tombstones.items():
        assert record.key in refs[(recipient, purpose)]
    about = {(e["recipient"], e["purpose"], e["egress_offset"]) for e in
             snap.entries("decide") if e["decision"] == "release"
             and pseudonym in [s["pseudonym"] for s in e["data_subjects"]]}
    assert sorted(causes.values()).count(b"erased") == len(about) >= 3
    ended = [k for k, v in decoded.items() if v.get("valid_until") == date(2026, 5, 20)]
    assert sorted(causes.values()).count(b"expired") == len(ended) >= 3
    # consume renders them as before, and no longer delivers what an erasure ended
    shown = {k: v["tombstone_cause"] for k, v in later.items() if v.get("tombstone")}
    assert sorted(shown.values()) == sorted(
        {b"erased": "erasure", b"expired": "expired"}[c] for c in causes.values())
    assert not about & set(later)

    # one burglary, three purposes: three unrelated keys, no shared header value but the
    # view-independent ones, and no value that holds another record's key
    streams = [k for k, v in decoded.items() if v.get("street") == STREET]
    assert {p for _, p, _ in streams} == {"surveillance-woninginbraak",
                                          "preventie-woninginbraak",
                                          "slachtoffer-preventieadvies"}, streams
    records = {k: next(r for r in topics[f"{env.name}.egress.{k[0]}.{k[1]}"]
                       if r.offset == k[2]) for k in streams}
    keys = {r.key for r in records.values()}
    assert len(keys) == len(records) == 3
    for key, record in records.items():
        for other_key, other in records.items():
            if key == other_key:
                continue
            shared = set(record.headers) & set(other.headers)
            assert {name for name, _ in shared} <= VIEW_INDEPENDENT, shared
            assert other.key not in record.value
    # each stream's traceparent is in a trace of its own (W3C: 00-trace-span-flags)
    traces = {dict(r.headers)["traceparent"].split(b"-")[1] for r in records.values()}
    assert len(traces) == 3, traces
    everything = b"".join((r.key or b"") + (r.value or b"") + b"".join(v for _, v in r.headers)
                          for rs in topics.values() for r in rs)
    assert linked["event_id"].encode() not in everything  # no event id of a burglary
    assert pseudonym.encode() not in everything  # no subject pseudonym (of key ids)
    assert b"|" not in b"".join(v for rs in topics.values() for r in rs
                               for n, v in r.headers if n != "broker_link")
