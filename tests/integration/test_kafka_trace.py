"""W3C trace context through `serve` on real Kafka (issue 13 item 1): a source's
`traceparent` header goes on as the trace of its decisions, the source's span as the
foreign operation, and the egress record carries the traceparent of the broker's span that
released it; a malformed header (not even UTF-8) is ignored, never a reason to drop or
quarantine the event."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from kafka import KafkaProducer

from broker.audit import trace
from tests import factories as f
from tests.integration.kafka_support import (
    ProcessLog,
    check_exactly_once,
    jsonl,
    kafka_env,
    lines_file,
    run_cli,
    snapshot,
)
from tests.integration.test_kafka_metrics import _samples, _serve, _total
from tests.kafka_launcher import load_launcher
from tests.unit.test_metrics import _get

NOW = "2026-05-10T12:00:00Z"
TYPE = "politie.woninginbraak"
TRACE, PARENT = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


def test_a_sources_traceparent_comes_out_on_the_egress_record_and_in_the_audit_entry(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    traced, not_utf8, upper = f.woninginbraak(), f.woninginbraak(), f.woninginbraak()
    with kafka_env(kafka_bootstrap, tmp_path / "kafka", partitions=2) as env:
        path = lines_file(tmp_path / "in.jsonl", jsonl([traced]))
        code, out = run_cli([*env.args(), "ingest", "--source", "politie", "--type",
                             "woninginbraak", "--traceparent", f"00-{TRACE}-{PARENT}-01",
                             str(path)])
        assert code == 0, out
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
        try:
            topic = f"{env.name}.ingress.{TYPE}"
            producer.send(topic, json.dumps(not_utf8).encode(),
                          headers=[("traceparent", b"\xff\xfe00-\x80")])
            producer.send(topic, json.dumps(upper).encode(),
                          headers=[("traceparent", f"00-{TRACE.upper()}-{PARENT}-01".encode())])
            producer.flush()
        finally:
            producer.close()
        code, out = run_cli([*env.args(), "--json", "--now", NOW, "serve", "--until-idle"])
        assert code == 0, out
        summary = json.loads(out.strip().splitlines()[-1])
        snap = snapshot(env)
        check_exactly_once(snap)
        code, verify = run_cli([*env.args(), "audit", "verify"])
        assert code == 0, verify

    assert (summary["stored"], summary["quarantined"]) == (3, 0), summary
    decisions = snap.entries("decide")
    by_event = {e["event_id"]: [d for d in decisions if d["event_id"] == e["event_id"]]
                for e in (traced, not_utf8, upper)}
    mine = by_event[traced["event_id"]]
    assert mine
    for entry in mine:
        assert entry["trace_id"] == TRACE
        assert (entry["foreign_trace_id"], entry["foreign_span_id"],
                entry["parent_span_id"]) == (TRACE, PARENT, PARENT)
        assert entry["detail"]["foreign_entity"] == "urn:covenant-broker:party:politie"
    for bad in (not_utf8, upper):  # decided in a trace of the broker's own
        entries = by_event[bad["event_id"]]
        assert entries
        assert all(e["trace_id"] != TRACE and e["foreign_span_id"] is None for e in entries)
    released = {e["span_id"]: e["detail"]["outbound_trace_id"] for e in mine
                if e["decision"] == "release"}
    assert released
    headers = [dict(r.headers or ()).get("traceparent") for records in snap.egress.values()
               for r in records]
    parsed = [trace.parse(h) for h in headers]
    assert all(p is not None for p in parsed)  # every release names its span
    # each in its stream's own trace, which the release's entry names: never the source's
    # trace id, which would link the event's streams (issue 12)
    ours = [p for p in parsed if p is not None and p.parent_id in released]
    assert {p.parent_id for p in ours} == set(released)
    assert all(p.trace_id == released[p.parent_id] != TRACE for p in ours)
    assert len({p.trace_id for p in ours}) == len(ours)


def test_serve_counts_the_bad_traceparents_it_ignored(kafka_bootstrap: str,
                                                     tmp_path: Path) -> None:
    port = load_launcher().free_port()
    bad = [b"\xff\xfe", f"00-{'0' * 32}-{PARENT}-01".encode()]
    with kafka_env(kafka_bootstrap, tmp_path / "kafka", partitions=2) as env:
        # one good one through the CLI (which also makes the topics), two bad ones raw
        path = lines_file(tmp_path / "in.jsonl", jsonl([f.woninginbraak()]))
        code, out = run_cli([*env.args(), "ingest", "--source", "politie", "--type",
                             "woninginbraak", "--traceparent", f"00-{TRACE}-{PARENT}-01",
                             str(path)])
        assert code == 0, out
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
        try:
            for header in bad:
                producer.send(f"{env.name}.ingress.{TYPE}",
                              json.dumps(f.woninginbraak()).encode(),
                              headers=[("traceparent", header)])
            producer.flush()
        finally:
            producer.close()
        proc = _serve(env, port)
        log = ProcessLog(proc)
        try:
            deadline, samples = time.monotonic() + 90, {}
            while time.monotonic() < deadline:
                time.sleep(0.5)
                assert proc.poll() is None, log.tail()
                try:
                    _, text = _get(port, "/metrics")
                except OSError:
                    continue  # not listening yet
                samples = _samples(text)
                # every event decided (a raw record sent to a partition that is not its
                # home is forwarded first, and judged, traceparent and all, at home)
                if _total(samples, "covenant_decide_latency_seconds_count") >= 1 + len(bad):
                    break
            else:
                raise AssertionError(f"never settled: {samples}\n{log.tail()}")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=60)
        assert proc.returncode == 0, log.tail()
        snap = snapshot(env)

    assert _total(samples, "covenant_bad_traceparent_total") == len(bad)
    assert snap.quarantine == 0


def test_a_correction_goes_on_in_its_sources_trace_on_kafka(kafka_bootstrap: str,
                                                           tmp_path: Path) -> None:
    revision_trace, revision_span = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    traced, untraced = f.woninginbraak(), f.woninginbraak()
    with kafka_env(kafka_bootstrap, tmp_path / "kafka", partitions=2) as env:
        path = lines_file(tmp_path / "in.jsonl", jsonl([traced, untraced]))
        code, out = run_cli([*env.args(), "ingest", "--source", "politie", "--type",
                             "woninginbraak", "--traceparent", f"00-{TRACE}-{PARENT}-01",
                             str(path)])
        assert code == 0, out
        code, out = run_cli([*env.args(), "--now", NOW, "serve", "--until-idle"])
        assert code == 0, out
        first = {e["span_id"] for es in snapshot(env).audit.values() for e in es}
        fix = lines_file(tmp_path / "fix.jsonl", jsonl([dict(traced, modus_operandi="flipperen")]))
        code, out = run_cli([*env.args(), "--json", "--now", NOW, "ingest", "--source",
                             "politie", "--type", "woninginbraak", "--correction", str(fix),
                             "--traceparent", f"00-{revision_trace}-{revision_span}-01"])
        assert code == 0, out
        assert json.loads(out)["retractions"] == 3
        # a correction straight on the ingress topic, its traceparent header malformed
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
        try:
            producer.send(f"{env.name}.ingress.{TYPE}",
                          json.dumps(dict(untraced, modus_operandi="flipperen")).encode(),
                          key=untraced["event_id"].encode(),
                          headers=[("action", b"correction"),
                                   ("traceparent", f"00-{TRACE.upper()}-{PARENT}-01".encode())])
            producer.flush()
        finally:
            producer.close()
        code, out = run_cli([*env.args(), "--json", "--now", NOW, "serve", "--until-idle"])
        assert code == 0, out
        snap = snapshot(env)  # decided twice by design: the corrections re-decide
        code, verify = run_cli([*env.args(), "audit", "verify"])
        assert code == 0, verify

    later = [e for es in snap.audit.values() for e in es if e["span_id"] not in first]
    mine = [e for e in later if e["event_id"] == traced["event_id"]
            and e["name"] in ("correction", "tombstone", "decide")]
    assert {e["name"] for e in mine} == {"correction", "tombstone", "decide"}
    for entry in mine:  # the revision's trace, never the original event's
        assert (entry["trace_id"], entry["foreign_trace_id"], entry["foreign_span_id"],
                entry["parent_span_id"]) == (revision_trace, revision_trace, revision_span,
                                             revision_span), entry["name"]
        assert entry["detail"]["foreign_entity"] == "urn:covenant-broker:party:politie"
    released = {e["span_id"]: e["detail"]["outbound_trace_id"] for e in mine
                if e["name"] == "decide" and e["decision"] == "release"}
    assert released
    parsed = [trace.parse(dict(r.headers or ()).get("traceparent"))
              for records in snap.egress.values() for r in records]
    ours = [p for p in parsed if p is not None and p.parent_id in released]
    assert {p.parent_id for p in ours} == set(released)  # the corrected releases name theirs
    assert all(p.trace_id == released[p.parent_id] != revision_trace for p in ours)
    # the malformed header: ignored, the correction applied in a trace of the broker's own
    bad = [e for e in later if e["event_id"] == untraced["event_id"]]
    assert [e["name"] for e in bad].count("correction") == 1
    assert all(e["trace_id"] not in (TRACE, TRACE.upper()) and e["foreign_span_id"] is None
               for e in bad)
