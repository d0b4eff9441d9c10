"""Bad input: one file mixing good lines with every kind of bad one. Nothing is lost."""

from __future__ import annotations

import json

import pytest

from broker.app.service import Broker
from broker.clock import parse_instant
from broker.crypto.sealing import Opened
from broker.pipeline.port import StoredEvent
from tests import factories as f

NOW = parse_instant("2026-05-10T12:00:00Z")


def test_a_mixed_file_quarantines_each_bad_line_with_its_reason(broker: Broker) -> None:
    good = [f.woninginbraak(), f.woninginbraak(address={"wijk": "zuid"})]
    missing = f.woninginbraak()
    del missing["victim"]
    naive = f.woninginbraak(occurred_until="2026-05-10T06:40:00")
    oversized = f.woninginbraak(stolen_goods=["x" * (16 * 1024 + 1)])
    extra = f.woninginbraak(app_version="1.2", address={"gps": "52.3,4.8"})
    inputs = f.lines(
        good[0],
        "{this is not json",
        missing,
        f.woninginbraak(attempt="yes"),
        naive,
        f.woninginbraak(modus_operandi="inbraak_met_geweld"),
        oversized,
        "[1, 2, 3]",
        "\"NaN\": NaN",
        good[1],
        good[0],  # resent: a duplicate event_id
        extra,
        f.woninginbraak(event_id="not-a-uuid"),
        f.woninginbraak(reported_at=True),
        f.woninginbraak(occurred_from=-5),
    )
    inputs.append(("line 16", b"\xff\xfe not utf-8"))
    inputs.append(("line 17", b"[" * 100_000 + b"]" * 100_000))
    report = broker.ingest("politie", "politie.woninginbraak", inputs, NOW)
    codes = {q.position: q.reason_code for q in report.quarantined}
    assert codes == {
        "line 2": "invalid_json", "line 3": "missing_field", "line 4": "wrong_type",
        "line 5": "naive_timestamp", "line 6": "wrong_value", "line 7": "field_too_large",
        "line 8": "wrong_type", "line 9": "invalid_json", "line 11": "duplicate_event",
        "line 13": "wrong_value", "line 14": "wrong_type", "line 15": "out_of_range",
        "line 16": "invalid_unicode", "line 17": "too_deeply_nested",
    }
    assert report.accepted == 3  # two good lines and the one with extra fields
    assert report.dropped_fields == [("line 12", ["app_version", "address.gps"])]
    assert broker.log.quarantine_count() == len(codes)
    reasons = {q.position: q.reason for q in report.quarantined}
    assert reasons["line 3"] == "victim: required field is missing"
    assert reasons["line 4"] == "attempt: expected a boolean, got string"
    assert reasons["line 5"] == "occurred_until: timestamp has no zone or offset"
    # one audit entry per quarantined line, and none of them carries the input's values
    schema = broker.registry.get("records.audit_entry")
    entries = [schema.decode(d) for _, d in broker.log.audit_rows()]
    quarantined = [e for e in entries if e["name"] == "quarantine"]
    assert sorted(e["detail"]["position"] for e in quarantined) == sorted(codes)
    assert not any("Jan Slachtoffer" in json.dumps(e, default=str) for e in entries)
    assert broker.verify_audit().ok


def test_unknown_extra_fields_are_never_stored(broker: Broker) -> None:
    event = f.woninginbraak(secret_note="CANARY-EXTRA-FIELD")
    broker.ingest("politie", "politie.woninginbraak", f.lines(event), NOW)
    raw = b"".join(e.payload for e in broker.log.read_store(-1, 100))
    assert b"CANARY-EXTRA-FIELD" not in raw
    assert b"secret_note" not in raw


def test_a_source_publishing_another_sources_type_is_quarantined(broker: Broker) -> None:
    report = broker.ingest("gemeente", "politie.woninginbraak",
                           f.lines(f.woninginbraak()), NOW)
    assert report.accepted == 0
    assert [q.reason_code for q in report.quarantined] == ["source_not_owner"]
    assert report.quarantined[0].reason == ("source gemeente may not publish "
                                            "politie.woninginbraak; only politie may")


def test_avro_single_object_input_is_accepted_and_checked(broker: Broker) -> None:
    schema = broker.registry.get("om.gebiedsverbod")
    from broker.model.json_input import Limits, convert

    record = convert(schema.raw, f.gebiedsverbod(), Limits()).record
    good = schema.encode(record)
    other = broker.registry.get("gemeente.boa_waarneming")
    wrong_type = other.encode(convert(other.raw, f.boa_waarneming(), Limits()).record)
    unknown_fp = b"\xc3\x01" + b"\x00" * 8 + good[10:]
    truncated = good[:-7]
    report = broker.ingest("om", "om.gebiedsverbod",
                           [("m1", good), ("m2", wrong_type), ("m3", unknown_fp),
                            ("m4", truncated)], NOW)
    assert report.accepted == 1
    assert {q.position: q.reason_code for q in report.quarantined} == {
        "m2": "type_mismatch", "m3": "unknown_schema", "m4": "undecodable"}


def test_a_stored_event_that_cannot_be_processed_is_withheld_not_fatal(
        broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    broker.ingest("om", "om.gebiedsverbod", f.lines(f.gebiedsverbod()), NOW)
    poisoned = broker.log.read_store(-1, 1)[0].offset
    real_open = broker.decider.open

    def fail_once(stored: StoredEvent) -> Opened:
        if stored.offset == poisoned + 1:
            raise RuntimeError("simulated corrupt store record")
        return real_open(stored)

    monkeypatch.setattr(broker.decider, "open", fail_once)
    report = broker.ingest("om", "om.gebiedsverbod",
                           f.lines(f.gebiedsverbod(), f.gebiedsverbod()), NOW)
    assert report.accepted == 2
    plans = len(broker.plans.plans_for("om.gebiedsverbod"))
    # the poisoned event withholds all its plans; the next one is decided normally
    assert report.decided.withheld >= plans
    assert report.decided.released == 3
    schema = broker.registry.get("records.audit_entry")
    errors = [e for _, d in broker.log.audit_rows()
              if (e := schema.decode(d))["status"] == "ERROR"]
    assert len(errors) == plans == 5
    assert {e["reason_code"] for e in errors} == {"processing_error"}
    assert broker.verify_audit().ok
