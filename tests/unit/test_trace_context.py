"""W3C Trace Context end to end (issue 13 item 1): a source's traceparent is validated on
ingress, its trace goes on through the decisions (the caller's span as W3C parent and
foreign operation), and the release carries the traceparent of the broker's own span; a
bad header is counted and ignored, whatever it is. HTTP answers name the request's span."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest

from broker.app.service import Broker
from broker.audit import trace
from broker.backends.embedded.event_log import SqliteEventLog
from broker.clock import parse_instant
from broker.config import load_settings
from broker.model.schemas import SchemaRegistry
from broker.pipeline.triage import RawInput
from tests import factories as f
from tests.unit.test_cli import run
from tests.unit.web_support import Web, open_web

NOW = parse_instant("2026-05-10T12:00:00Z")
TRACE, PARENT = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
HEADER = f"00-{TRACE}-{PARENT}-01"
TYPE = "politie.woninginbraak"


def entries(broker: Broker) -> list[dict[str, Any]]:
    schema = broker.registry.get("records.audit_entry")
    return [schema.decode(data) for _, data in broker.log.audit_rows()]


def bad_count(broker: Broker) -> float:
    text = generate_latest(broker.metrics.registry).decode()
    for line in text.splitlines():
        if line.startswith("covenant_bad_traceparent_total "):
            return float(line.split()[1])
    raise AssertionError("no covenant_bad_traceparent_total sample")


# -- the header ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    (HEADER, trace.TraceParent(TRACE, PARENT, "01")),
    (f"00-{TRACE}-{PARENT}-00", trace.TraceParent(TRACE, PARENT, "00")),
    (f" \t00-{TRACE}-{PARENT}-01 ", trace.TraceParent(TRACE, PARENT, "01")),  # OWS
    (f"cc-{TRACE}-{PARENT}-01", trace.TraceParent(TRACE, PARENT, "01", "cc")),
    (f"cc-{TRACE}-{PARENT}-01-what-the-future-holds",
     trace.TraceParent(TRACE, PARENT, "01", "cc")),
    (HEADER.encode(), trace.TraceParent(TRACE, PARENT, "01")),
    (None, None),
])
def test_valid_traceparents_parse(value: str | bytes | None,
                                  expected: trace.TraceParent | None) -> None:
    assert trace.parse(value) == expected


def test_a_future_version_is_passed_on_as_version_00() -> None:
    parsed = trace.parse(f"cc-{TRACE}-{PARENT}-09-extra")
    assert parsed is not None
    assert parsed.header() == f"00-{TRACE}-{PARENT}-09"


@pytest.mark.parametrize("value", [
    "", "00", f"ff-{TRACE}-{PARENT}-01",  # version ff is invalid
    f"00-{'0' * 32}-{PARENT}-01", f"00-{TRACE}-{'0' * 16}-01",  # all-zero ids
    f"00-{TRACE.upper()}-{PARENT}-01", f"00-{TRACE}-{PARENT.upper()}-01",  # upper case
    f"00-{TRACE}-{PARENT}-01-extra",  # version 00 is exactly 55 characters
    f"00-{TRACE}-{PARENT}-1", f"00-{TRACE[:-1]}-{PARENT}-01", f"00_{TRACE}_{PARENT}_01",
    f"cc-{TRACE}-{PARENT}-01x",  # a later version: the flags end at a dash or the end
    f"0g-{TRACE}-{PARENT}-01", f"00-{TRACE}-{PARENT}-0g", "x" * 10_000,
    b"\xff\xfe00-", "00-" + "é" * 52,
])
def test_invalid_traceparents_are_refused(value: str | bytes) -> None:
    with pytest.raises(trace.BadTraceparent):
        trace.parse(value)


# -- embedded, end to end -----------------------------------------------------------------------

def test_a_sources_traceparent_comes_out_on_the_egress_record_and_in_the_audit_entry(
        broker: Broker) -> None:
    report = broker.ingest("politie", TYPE, f.lines(f.woninginbraak()), NOW,
                           traceparent=HEADER)
    assert report.accepted == 1
    decisions = [e for e in entries(broker) if e["name"] == "decide"]
    assert decisions
    for entry in decisions:  # the caller's trace goes on; its span is the foreign operation
        assert entry["trace_id"] == TRACE
        assert (entry["foreign_trace_id"], entry["foreign_span_id"],
                entry["parent_span_id"]) == (TRACE, PARENT, PARENT)
        assert entry["detail"]["foreign_entity"] == "urn:covenant-broker:party:politie"
        # beside the foreign operation, the purpose's LDV processing activity (issue 13)
        assert entry["detail"]["processing_activity_id"].endswith(entry["purpose"])
        assert entry["span_id"] != PARENT
    released = {e["span_id"]: e["detail"]["outbound_trace_id"] for e in decisions
                if e["decision"] == "release"}
    delivered = broker.consume("boa-hor-noord", None, 0, NOW)
    assert delivered
    for record in delivered:  # the broker's own span that released it
        parsed = trace.parse(record.traceparent)
        assert parsed is not None
        # in the stream's own trace, which the release's entry names (issue 12: one
        # trace id on every stream of an event would link them)
        assert parsed.trace_id == released[parsed.parent_id] != TRACE
        assert record.as_json()["traceparent"] == record.traceparent
    streams = {e["detail"]["outbound_trace_id"] for e in entries(broker)
               if e["name"] == "decide" and e["decision"] == "release"}
    assert len(streams) == len(released)  # no two streams share an outbound trace
    assert bad_count(broker) == 0


def test_without_a_traceparent_each_event_gets_a_trace_of_its_own(broker: Broker) -> None:
    broker.ingest("politie", TYPE, f.lines(f.woninginbraak(), f.woninginbraak()), NOW)
    decisions = [e for e in entries(broker) if e["name"] == "decide"]
    assert len({e["trace_id"] for e in decisions}) == 2
    assert all(e["foreign_trace_id"] is e["foreign_span_id"] is e["parent_span_id"] is None
               and "foreign_entity" not in e["detail"] for e in decisions)
    assert all(trace.parse(d.traceparent) is not None
               for d in broker.consume("boa-hor-noord", None, 0, NOW))


def test_a_malformed_traceparent_is_counted_and_ignored(broker: Broker) -> None:
    bad = f"00-{TRACE.upper()}-{PARENT}-01"
    report = broker.ingest("politie", TYPE, f.lines(f.woninginbraak(), "not json"), NOW,
                           traceparent=bad)
    assert (report.accepted, len(report.quarantined)) == (1, 1)  # only the bad line
    assert bad_count(broker) == 2  # both inputs came with it
    found = entries(broker)
    assert all(e["trace_id"] not in (TRACE, TRACE.upper()) and e["foreign_trace_id"] is None
               for e in found)
    delivered = broker.consume("boa-hor-noord", None, 0, NOW)
    assert delivered
    assert all(trace.parse(d.traceparent) for d in delivered)


def test_a_quarantined_input_keeps_its_sources_trace(broker: Broker) -> None:
    broker.ingest("politie", TYPE, f.lines("not json"), NOW, traceparent=HEADER)
    (entry,) = [e for e in entries(broker) if e["name"] == "quarantine"]
    assert (entry["trace_id"], entry["foreign_span_id"]) == (TRACE, PARENT)


# -- corrections and withdrawals (AVG art. 19) ---------------------------------------------------

REVISION_TRACE, REVISION_SPAN = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
REVISION_HEADER = f"00-{REVISION_TRACE}-{REVISION_SPAN}-01"


def in_revision_trace(entry: dict[str, Any]) -> bool:
    """The entry goes on in the revision's caller's trace, the caller's span its foreign
    operation and W3C parent, as an event's decide entry does."""
    return ((entry["trace_id"], entry["foreign_trace_id"], entry["foreign_span_id"],
             entry["parent_span_id"]) == (REVISION_TRACE, REVISION_TRACE, REVISION_SPAN,
                                          REVISION_SPAN)
            and entry["detail"]["foreign_entity"] == "urn:covenant-broker:party:politie")


def test_a_correction_goes_on_in_its_sources_trace(broker: Broker) -> None:
    burglary = f.woninginbraak()
    broker.ingest("politie", TYPE, f.lines(burglary), NOW, traceparent=HEADER)
    first = len(entries(broker))
    corrected = dict(burglary, address=dict(burglary["address"], wijk="oost"))
    report = broker.ingest_revisions("correction", "politie", TYPE, f.lines(corrected), NOW,
                                     traceparent=REVISION_HEADER)
    assert (report.accepted, report.retractions) == (1, 3)
    later = entries(broker)[first:]
    (request,) = [e for e in later if e["name"] == "correction"]
    retractions = [e for e in later if e["name"] == "tombstone"]
    decisions = [e for e in later if e["name"] == "decide"]
    assert len(retractions) == 3
    assert decisions
    # the request, its retractions and the corrected decisions: the revision's trace,
    # never the original event's (a parent_span_id from another trace)
    assert all(in_revision_trace(e) for e in [request, *retractions, *decisions])
    released = {e["span_id"]: e["detail"]["outbound_trace_id"] for e in decisions
                if e["decision"] == "release"}
    corrected_records = [d for d in broker.consume("boa-hor-oost", None, 0, NOW)
                         if d.kind == "record"]
    assert corrected_records
    for record in corrected_records:  # per-stream outbound trace, as releases do (issue 12)
        parsed = trace.parse(record.traceparent)
        assert parsed is not None
        assert parsed.trace_id == released[parsed.parent_id] != REVISION_TRACE
    assert bad_count(broker) == 0
    assert broker.verify_audit().ok


def test_a_withdrawal_goes_on_in_its_sources_trace(broker: Broker) -> None:
    burglary = f.woninginbraak()
    broker.ingest("politie", TYPE, f.lines(burglary), NOW, traceparent=HEADER)
    first = len(entries(broker))
    lift = json.dumps({"event_id": burglary["event_id"], "reason": "ten onrechte"})
    report = broker.ingest_revisions("withdrawal", "politie", TYPE, f.lines(lift), NOW,
                                     traceparent=REVISION_HEADER)
    assert (report.accepted, report.retractions) == (1, 3)
    later = entries(broker)[first:]
    assert [e["name"] for e in later].count("withdrawal") == 1
    assert all(in_revision_trace(e) for e in later if e["name"] in ("withdrawal", "tombstone"))
    stored = broker.revision_reader.revisions_of(TYPE, [burglary["event_id"]])
    assert [(r.trace_id, r.foreign_trace) for r in stored] == [(REVISION_TRACE,
                                                                REVISION_HEADER)]


def test_a_quarantined_revision_keeps_its_sources_trace(broker: Broker) -> None:
    lift = json.dumps({"event_id": f.new_id(), "reason": "ten onrechte"})
    report = broker.ingest_revisions("withdrawal", "politie", TYPE, f.lines(lift), NOW,
                                     traceparent=REVISION_HEADER)
    assert [q.reason_code for q in report.quarantined] == ["unknown_original"]
    (entry,) = [e for e in entries(broker) if e["name"] == "quarantine"]
    assert in_revision_trace(entry)


def test_a_malformed_revision_traceparent_is_counted_and_ignored(broker: Broker) -> None:
    burglary = f.woninginbraak()
    broker.ingest("politie", TYPE, f.lines(burglary), NOW)
    first = len(entries(broker))
    corrected = dict(burglary, address=dict(burglary["address"], wijk="oost"))
    bad = f"00-{REVISION_TRACE.upper()}-{REVISION_SPAN}-01"
    report = broker.ingest_revisions("correction", "politie", TYPE,
                                     f.lines(corrected, "not json"), NOW, traceparent=bad)
    assert (report.accepted, len(report.quarantined)) == (1, 1)  # applied all the same
    assert report.retractions == 3
    assert bad_count(broker) == 2  # both inputs came with it
    later = entries(broker)[first:]
    assert all(e["trace_id"] not in (REVISION_TRACE, REVISION_TRACE.upper())
               and e["foreign_trace_id"] is e["parent_span_id"] is None for e in later)
    # a trace of its own, which its retractions and corrected decisions go on in
    (request,) = [e for e in later if e["name"] == "correction"]
    assert {e["trace_id"] for e in later if e["name"] in ("tombstone", "decide")} == {
        request["trace_id"]}


def test_cli_ingest_correction_uses_its_traceparent(tmp_path: Path) -> None:
    data = tmp_path / "data"
    burglary = f.woninginbraak()
    (tmp_path / "b.jsonl").write_bytes(f.jsonl(burglary))
    (tmp_path / "fix.jsonl").write_bytes(f.jsonl(dict(burglary, modus_operandi="flipperen")))
    assert run("ingest", "--source", "politie", "--type", TYPE, tmp_path / "b.jsonl",
               data=data).returncode == 0
    done = run("ingest", "--source", "politie", "--type", TYPE, "--correction",
               tmp_path / "fix.jsonl", "--traceparent", REVISION_HEADER, data=data)
    assert done.returncode == 0, done.stderr
    broker = Broker(load_settings(overrides={"data_dir": data}, environ={}))
    try:
        found = [e for e in entries(broker) if e["name"] in ("correction", "tombstone")]
    finally:
        broker.close()
    assert found
    assert all(in_revision_trace(e) for e in found)


_NEAR = st.from_regex(r"\A[0-9a-fA-F]{2}-[0-9a-fA-F]{32}-[0-9a-fA-F]{16}-[0-9a-fA-F]{2}"
                      r"(-.{0,8})?\Z")
ANY_HEADER = st.one_of(st.text(max_size=80), _NEAR, st.just(HEADER))


def test_any_header_string_never_crashes_or_drops_the_event(
        make_broker: Callable[..., Broker]) -> None:
    broker = make_broker()
    seen = {"bad": 0}

    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(header=ANY_HEADER)
    def check(header: str) -> None:
        try:
            valid = trace.parse(header)
        except trace.BadTraceparent:
            valid, seen["bad"] = None, seen["bad"] + 1
        event = f.woninginbraak()
        report = broker.ingest("politie", TYPE, f.lines(event), NOW, traceparent=header)
        assert report.accepted == 1
        assert not report.quarantined
        mine = [e for e in entries(broker) if e["event_id"] == event["event_id"].lower()]
        assert mine
        assert all(e["name"] == "decide" for e in mine)
        if valid is not None:
            assert all(e["trace_id"] == valid.trace_id for e in mine)
        else:
            assert all(e["foreign_span_id"] is None for e in mine)
        assert bad_count(broker) == seen["bad"]

    check()


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.one_of(st.binary(max_size=80), ANY_HEADER.map(str.encode)))
def test_any_kafka_header_bytes_are_judged_never_raised(broker: Broker, header: bytes) -> None:
    """The Kafka partition worker hands the header's bytes as sent to the triage."""
    raw = RawInput("politie", TYPE, "topic:0:0", f.jsonl(f.woninginbraak()).strip(),
                   traceparent=header)
    result = broker.triage.triage([raw], NOW, lambda _t, _ids: set())
    (event,) = result.events
    assert result.bad_traceparents in (0, 1)
    if result.bad_traceparents:
        assert event.traceparent is None
    else:
        assert event.traceparent is not None
        assert event.trace_id in event.traceparent


# -- HTTP -------------------------------------------------------------------------------------

@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    yield from open_web(tmp_path / "data")


RECORDS = "/v1/streams/surveillance-woninginbraak/records"


def test_an_http_answer_names_the_requests_span_in_the_callers_trace(web: Web) -> None:
    answer = web.client.get(RECORDS, headers={**web.token("boa-hor-noord"),
                                              "traceparent": HEADER})
    assert answer.status_code == 200
    own = trace.parse(answer.headers["traceparent"])
    assert own is not None
    assert own.trace_id == TRACE
    assert own.parent_id != PARENT
    (access,) = [e for e in web.audit(name="access") if e["trace_id"] == TRACE]
    assert access["span_id"] == own.parent_id  # the answer names the access entry's span
    assert (access["foreign_trace_id"], access["foreign_span_id"],
            access["parent_span_id"]) == (TRACE, PARENT, PARENT)
    assert access["detail"]["foreign_entity"] == "urn:covenant-broker:recipient:boa-hor-noord"
    records = answer.json()["records"]
    assert records
    assert all(trace.parse(r["traceparent"]) for r in records)


def test_a_bad_http_traceparent_is_counted_and_the_answer_has_a_trace_of_its_own(
        web: Web) -> None:
    before = web.run(bad_count)
    for bad in ("00-nope", f"00-{'0' * 32}-{PARENT}-01"):
        answer = web.client.get(RECORDS, headers={**web.token("boa-hor-noord"),
                                                  "traceparent": bad})
        assert answer.status_code == 200
        own = trace.parse(answer.headers["traceparent"])
        assert own is not None
        assert own.trace_id != TRACE
    assert web.run(bad_count) == before + 2
    every = web.client.get("/console/login")  # every answer carries one, console too
    assert trace.parse(every.headers["traceparent"]) is not None


def test_a_revision_stored_before_trace_context_reads_back_with_none(tmp_path: Path) -> None:
    """A data dir whose revisions table predates the foreign_trace column gets it on open;
    its older rows read as no caller (the decision then has no foreign operation)."""
    path = tmp_path / "store.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE revisions (seq INTEGER PRIMARY KEY, action TEXT NOT NULL, "
               "event_type TEXT NOT NULL, source TEXT NOT NULL, event_id TEXT NOT NULL, "
               "original_offset INTEGER NOT NULL, payload BLOB NOT NULL, "
               "reason TEXT NOT NULL, digest TEXT NOT NULL, trace_id TEXT NOT NULL, "
               "ingested_ms INTEGER NOT NULL, after_store_offset INTEGER NOT NULL)")
    db.execute("INSERT INTO revisions VALUES (0, 'withdrawal', ?, 'politie', 'e1', 0, x'', "
               "'ten onrechte', '', ?, 1, 0)", (TYPE, TRACE))
    db.commit()
    db.close()
    path.chmod(0o600)  # as the broker makes it
    schema = SchemaRegistry(Path(__file__).resolve().parents[2] / "schemas").get(
        "records.audit_entry")
    log = SqliteEventLog(path, schema)
    try:
        (old,) = log.read_revisions(-1, 10)
    finally:
        log.close()
    assert (old.seq, old.trace_id, old.foreign_trace) == (0, TRACE, None)
