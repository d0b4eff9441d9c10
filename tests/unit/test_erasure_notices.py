"""Erasure reaches the recipients (AVG art. 19): every record released about the erased
person gets one erasure notice (a tombstone with cause "erasure") on its stream, audited
once; withheld records and records that already have a tombstone get none."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from broker import logs
from broker.app.service import Broker
from broker.clock import parse_instant
from broker.model.schemas import build_schema
from broker.pipeline.port import EgressRecord
from tests import factories as f

NOW = parse_instant("2026-05-10T12:00:00Z")
BSN = "246813579"
NAME = "CANARY-NOTICE-NAAM"
REPO = Path(__file__).resolve().parents[2]


def entries(broker: Broker, name: str | None = None) -> list[dict[str, Any]]:
    schema = broker.registry.get("records.audit_entry")
    out = [schema.decode(d) for _, d in broker.log.audit_rows()]
    return [e for e in out if name is None or e["name"] == name]


def tombstones(broker: Broker) -> list[dict[str, Any]]:
    return [d.as_json() for r in broker.covenant.recipients
            for d in broker.consume(r, None, 0, NOW) if d.kind == "tombstone"]


def releases_about(broker: Broker, pseudonym: str) -> dict[tuple[str, str, int], Any]:
    return {(e["recipient"], e["purpose"], e["egress_offset"]): e
            for e in entries(broker, "decide") if e["decision"] == "release"
            and any(s["pseudonym"] == pseudonym for s in e["data_subjects"])}


def plant(broker: Broker, *, consent: bool = True) -> None:
    victim = {"name": NAME, "bsn": BSN, "consent_prevention_advice": consent}
    broker.ingest("politie", "politie.woninginbraak", f.lines(
        f.woninginbraak(victim=victim), f.woninginbraak()), NOW)
    broker.ingest("om", "om.gebiedsverbod", f.lines(
        f.gebiedsverbod(person={"name": NAME, "bsn": BSN})), NOW)


def test_each_released_record_gets_one_notice_with_its_reference_and_no_bsn(
        broker: Broker, capfd: pytest.CaptureFixture[str]) -> None:
    logs.configure("debug", "json")
    plant(broker)
    pseudonym = broker.sealer.subject_pseudonym("bsn", BSN)
    released = releases_about(broker, pseudonym)
    assert len(released) >= 4  # burglary: preventie x2, surveillance; area ban: 3 teams

    report = broker.erase_subject(BSN, "AVG art. 17 verzoek", NOW)

    assert sum(report.notices.values()) == len(released)
    assert Counter(report.notices) == Counter(
        {f"{r}/{p}": n for (r, p), n in Counter((r, p) for r, p, _ in released).items()})
    notices = tombstones(broker)
    assert len(notices) == len(released)
    by_target = {(n["recipient"], n["purpose"], n["record"]["released_offset"]): n
                 for n in notices}
    assert set(by_target) == set(released)
    for key, notice in by_target.items():
        assert notice["tombstone_cause"] == "erasure"
        assert notice["record"]["cause"] == "erasure"
        original = next(r for r in broker.log.read_egress(key[0], key[1], key[2])
                        if r.offset == key[2])
        assert notice["record"]["ref"] == original.ref  # the same opaque reference
        assert notice["event_type"] == original.event_type
    # one audit entry per notice, naming the person by pseudonym, and one erasure entry
    audited = entries(broker, "tombstone")
    assert len(audited) == len(released)
    assert {(e["recipient"], e["purpose"], int(e["detail"]["released_offset"]))
            for e in audited} == set(released)
    for e in audited:
        assert e["decision"] == "erase"
        assert e["reason_code"] == "erasure_request"
        assert e["detail"]["cause"] == "erasure"
        assert pseudonym in [s["pseudonym"] for s in e["data_subjects"]]
    (erasure,) = entries(broker, "erasure")
    assert erasure["detail"]["notices"] == str(len(released))
    text = json.dumps(notices) + json.dumps(entries(broker), default=str)
    out, err = capfd.readouterr()
    for secret in (BSN, NAME):
        assert secret not in text
        assert secret not in out + err
    assert broker.verify_audit().ok


def test_erasing_twice_sends_nothing_new(broker: Broker) -> None:
    plant(broker)
    first = broker.erase_subject(BSN, "verzoek", NOW)
    assert first.notices
    before = tombstones(broker)
    again = broker.erase_subject(BSN, "verzoek", NOW)
    assert again.destroyed == []
    assert again.notices == {}
    assert tombstones(broker) == before
    assert len(entries(broker, "tombstone")) == sum(first.notices.values())
    assert len(entries(broker, "erasure")) == 2  # each request is audited


def test_withheld_records_get_no_notice(broker: Broker) -> None:
    plant(broker, consent=False)  # slachtoffer-preventieadvies needs the victim's consent
    pseudonym = broker.sealer.subject_pseudonym("bsn", BSN)
    withheld = [e for e in entries(broker, "decide") if e["decision"] == "withhold"
                and e["purpose"] == "slachtoffer-preventieadvies"]
    assert any(pseudonym in [s["pseudonym"] for s in e["data_subjects"]] for e in withheld)
    report = broker.erase_subject(BSN, "verzoek", NOW)
    assert "preventie/slachtoffer-preventieadvies" not in report.notices
    assert report.notices  # the other recipients are still told
    assert sum(report.notices.values()) == len(releases_about(broker, pseudonym))


def test_a_record_has_one_tombstone_whether_it_expired_or_was_erased_first(
        broker: Broker) -> None:
    plant(broker)
    after_ban = parse_instant("2026-08-02T12:00:00Z")  # valid_until 2026-07-31 has passed
    expired = broker.sweep_expiries(after_ban)
    assert expired > 0
    report = broker.erase_subject(BSN, "verzoek", after_ban)
    assert not any(stream.endswith("/handhaving-gebiedsverbod") for stream in report.notices)
    assert report.notices  # burglary records had no tombstone yet
    assert broker.sweep_expiries(after_ban) == 0
    targets = Counter((t["recipient"], t["purpose"], t["record"]["released_offset"])
                      for t in tombstones(broker))
    assert set(targets.values()) == {1}


def test_an_erasure_notice_blocks_a_later_expiry_tombstone(broker: Broker) -> None:
    plant(broker)
    report = broker.erase_subject(BSN, "verzoek", NOW)
    assert report.notices["boa-hor-noord/handhaving-gebiedsverbod"] == 1
    assert broker.sweep_expiries(parse_instant("2026-08-02T12:00:00Z")) == 0


def test_a_tombstone_written_before_the_cause_field_still_renders(broker: Broker) -> None:
    v1 = REPO / "schemas" / "records" / "history" / "records.tombstone.v1.avsc"
    old = build_schema(json.loads(v1.read_text()), "records", v1)
    payload = old.encode({"ref": "abc", "expired": True, "expired_after": date(2026, 7, 31),
                          "released_offset": 3, "reason": "ended"})
    shown = broker.render(EgressRecord("boa-hor-noord", "handhaving-gebiedsverbod", 4,
                                       "om.gebiedsverbod", "tombstone", payload, 0, "abc",
                                       None, 0)).as_json()
    assert shown["record"]["cause"] == "expired"
    assert shown["record"]["ref"] == "abc"
    assert shown["tombstone_cause"] == "expired"


def test_the_subject_report_lists_the_notices_as_disclosures(broker: Broker) -> None:
    plant(broker)
    report = broker.erase_subject(BSN, "verzoek", NOW)
    assert broker.audit is not None
    pseudonym = broker.sealer.subject_pseudonym("bsn", BSN)
    subject = broker.audit.subject_report(pseudonym, "bsn", "2026-05-10T12:00:00Z")
    erased = [i for i in subject["disclosures"] if i["decision"] == "erase"]
    assert len(erased) == sum(report.notices.values())
