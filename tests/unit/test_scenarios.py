"""The six purposes of the sample covenant, in and out of scope, on every backend.

Each test ingests through Broker.ingest_settled (every input stored or quarantined, decided,
egress and audit written when it returns), reads through Broker.consume, the audit entries
and Broker.verify_audit: the application surface both backends share, so the whole
pipeline (validate, store, decide, egress, audit) is exercised with nothing re-implemented
here. The `backend` fixture chooses the backend: "embedded" in this module;
tests/integration/test_kafka_scenarios.py collects these tests again with "kafka" (a real
Kafka, one partition).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from broker.app.service import Broker
from broker.clock import parse_instant
from broker.pipeline.triage import DUPLICATE_REASON
from tests import factories as f

NOW = parse_instant("2026-05-10T12:00:00Z")


@pytest.fixture(params=["embedded"])
def backend(request: pytest.FixtureRequest) -> str:
    """The backend the scenarios run on (the Kafka module overrides the parameter)."""
    return str(request.param)


@pytest.fixture
def embedded_broker(make_broker: Callable[..., Broker]) -> Broker:
    return make_broker()


@pytest.fixture
def broker(backend: str, request: pytest.FixtureRequest) -> Broker:
    """A Broker on `backend`, built by the fixture `<backend>_broker`."""
    built = request.getfixturevalue(f"{backend}_broker")
    assert isinstance(built, Broker)
    return built


def ingest(broker: Broker, event_type: str, *events: dict[str, Any],
           now: datetime = NOW) -> None:
    report = broker.ingest_settled(event_type.split(".", 1)[0], event_type,
                                   f.numbered(*events), now)
    assert report.quarantined == [], report.quarantined
    assert report.accepted == len(events)


def records(broker: Broker, recipient: str, purpose: str | None = None,
            now: datetime = NOW) -> list[dict[str, Any]]:
    return [d.as_json() for d in broker.consume(recipient, purpose, 0, now)]


def audit_entries(broker: Broker, name: str | None = None) -> list[dict[str, Any]]:
    """The audit entries (named `name`), in one order on every backend: by start time,
    then as the backend returns them. That is the log's sequence on the embedded backend;
    Kafka keeps one chain per audit partition and returns them partition by partition,
    each in chain order, so with the one data partition the Kafka module runs these on,
    the decisions and quarantine entries come in the order they were written too."""
    schema = broker.registry.get("records.audit_entry")
    entries = [schema.decode(data) for data in broker.log.audit_entries()]
    return sorted((e for e in entries if name is None or e["name"] == name),
                  key=lambda e: e["start_time"])


def decisions(broker: Broker) -> list[dict[str, Any]]:
    return audit_entries(broker, "decide")


def withheld_reason(broker: Broker, recipient: str, purpose: str) -> str | None:
    found = [d for d in decisions(broker) if d["recipient"] == recipient
             and d["purpose"] == purpose]
    assert found, f"no decision for {recipient}/{purpose}"
    return found[-1]["reason_code"] if found[-1]["decision"] == "withhold" else None


# -- 1. surveillance-woninginbraak -------------------------------------------------------------

def test_surveillance_goes_to_the_boa_of_the_event_wijk_only(broker: Broker) -> None:
    event = f.woninginbraak(address={"wijk": "oost"})
    ingest(broker, "politie.woninginbraak", event)
    got = records(broker, "boa-hor-oost", "surveillance-woninginbraak")
    assert len(got) == 1
    record = got[0]["record"]
    assert record == {
        "ref": record["ref"], "occurred_from": "2026-05-09T20:00:00Z",
        "occurred_until": "2026-05-10T04:00:00Z", "street": "Dorpsstraat",
        "postcode4": "1181", "wijk": "oost", "attempt": False, "heterdaad": False,
        "modus_operandi": "cilinder_trekken"}
    assert re.fullmatch(r"[0-9a-f]{32}", record["ref"])
    assert event["event_id"] not in json.dumps(got)
    for other in ("boa-hor-noord", "boa-hor-zuid", "boa-hor-west"):
        assert records(broker, other) == []
        assert withheld_reason(broker, other, "surveillance-woninginbraak") == "out_of_scope"


def test_surveillance_max_age_is_14_days_by_occurred_until(broker: Broker) -> None:
    exactly = f.woninginbraak(occurred_until="2026-04-26T12:00:00Z",
                              occurred_from="2026-04-26T10:00:00Z")
    older = f.woninginbraak(occurred_until="2026-04-26T11:59:00Z",
                            occurred_from="2026-04-26T10:00:00Z")
    ingest(broker, "politie.woninginbraak", exactly, older)
    got = records(broker, "boa-hor-noord", "surveillance-woninginbraak")
    assert [r["record"]["occurred_until"] for r in got] == ["2026-04-26T12:00:00Z"]
    reasons = [d["reason_code"] for d in decisions(broker)
               if d["recipient"] == "boa-hor-noord"
               and d["purpose"] == "surveillance-woninginbraak"]
    assert reasons == [None, "too_old"]


@pytest.mark.parametrize(("switches", "released"), [
    ([], False),  # themes start off
    ([("on", "2026-05-10T09:00:00Z")], True),
    ([("on", "2026-05-10T09:00:00Z"), ("off", "2026-05-10T11:00:00Z")], False),
    ([("on", "2026-05-10T13:00:00Z")], False),  # switched on after the decision time
    ([("off", "2026-05-10T08:00:00Z"), ("on", "2026-05-10T11:59:59Z")], True),
])
def test_interventieteam_gets_surveillance_only_while_theme_is_on(
        broker: Broker, switches: list[tuple[str, str]], released: bool) -> None:
    for state, at in switches:
        broker.switch_theme("woninginbraak", state == "on", parse_instant(at))
    ingest(broker, "politie.woninginbraak", f.woninginbraak())
    got = records(broker, "interventieteam", "surveillance-woninginbraak")
    assert len(got) == (1 if released else 0)
    if not released:
        assert withheld_reason(broker, "interventieteam",
                               "surveillance-woninginbraak") == "theme_off"


def test_a_later_theme_switch_does_not_rewrite_earlier_decisions(broker: Broker) -> None:
    ingest(broker, "politie.woninginbraak", f.woninginbraak())
    broker.switch_theme("woninginbraak", True, parse_instant("2026-05-10T12:30:00Z"))
    later = parse_instant("2026-05-10T13:00:00Z")
    assert records(broker, "interventieteam", now=later) == []
    ingest(broker, "politie.woninginbraak", f.woninginbraak(), now=later)
    assert len(records(broker, "interventieteam", now=later)) == 1


@pytest.mark.parametrize(("now", "flows"), [
    ("2020-04-28T21:59:59Z", False),  # 2020-04-28 23:59 in Amsterdam: not yet valid
    ("2020-04-28T22:00:00Z", True),   # 2020-04-29 00:00 in Amsterdam: first day
    ("2026-12-31T22:59:59Z", True),   # 2026-12-31 23:59 in Amsterdam: last day
    ("2026-12-31T23:00:00Z", False),  # 2027-01-01 00:00 in Amsterdam: expired
    ("2027-03-01T12:00:00Z", False),
])
def test_nothing_flows_outside_the_covenant_validity(broker: Broker, now: str,
                                                     flows: bool) -> None:
    at = parse_instant(now)
    event = f.woninginbraak(occurred_until=now, occurred_from=now, reported_at=now)
    ingest(broker, "politie.woninginbraak", event, now=at)
    got = records(broker, "preventie", now=at)
    assert bool(got) is flows
    if not flows:
        codes = {d["reason_code"] for d in decisions(broker)}
        assert codes <= {"covenant_expired", "covenant_not_yet_valid"}
        reason = decisions(broker)[0]["reason"]
        assert "2026-12-31" in reason or "2020-04-29" in reason


# -- 2. preventie-woninginbraak ------------------------------------------------------------

def test_preventie_gets_street_level_facts_and_nothing_about_persons(broker: Broker) -> None:
    event = f.woninginbraak(victim={"consent_prevention_advice": False})
    ingest(broker, "politie.woninginbraak", event)
    got = records(broker, "preventie", "preventie-woninginbraak")
    assert re.fullmatch(r"[0-9a-f]{32}", got[0]["record"]["ref"])  # every view has its ref
    assert [r["record"] for r in got] == [{
        "ref": got[0]["record"]["ref"],
        "street": "Dorpsstraat", "postcode4": "1181", "wijk": "noord", "date": "2026-05-10",
        "modus_operandi": "cilinder_trekken", "attempt": False}]
    text = json.dumps(records(broker, "preventie"))
    for personal in ("Jan Slachtoffer", "111222333", "0612345678", "Piet Verdachte", "12"):
        assert f'"{personal}"' not in text


# -- 3. slachtoffer-preventieadvies --------------------------------------------------------

@pytest.mark.parametrize("consent", [True, False])
def test_victim_details_only_with_consent(broker: Broker, consent: bool) -> None:
    ingest(broker, "politie.woninginbraak",
           f.woninginbraak(victim={"consent_prevention_advice": consent}))
    got = records(broker, "preventie", "slachtoffer-preventieadvies")
    if consent:
        assert re.fullmatch(r"[0-9a-f]{32}", got[0]["record"]["ref"])
        assert [r["record"] for r in got] == [{
            "ref": got[0]["record"]["ref"],
            "name": "Jan Slachtoffer", "phone": "0612345678", "email": "jan@example.nl",
            "street": "Dorpsstraat", "house_number": "12", "postcode": "1181 ZM",
            "modus_operandi": "cilinder_trekken", "date": "2026-05-10"}]
        assert "111222333" not in json.dumps(got)
    else:
        assert got == []
        assert withheld_reason(broker, "preventie",
                               "slachtoffer-preventieadvies") == "condition_not_met"


def test_victim_without_phone_or_email_gets_nulls(broker: Broker) -> None:
    event = f.woninginbraak()
    del event["victim"]["phone"], event["victim"]["email"], event["victim"]["bsn"]
    ingest(broker, "politie.woninginbraak", event)
    (got,) = records(broker, "preventie", "slachtoffer-preventieadvies")
    assert got["record"]["phone"] is None
    assert got["record"]["email"] is None


# -- 4. handhaving-gebiedsverbod -----------------------------------------------------------

def test_area_ban_goes_to_boas_of_the_banned_wijken_and_the_interventieteam(
        broker: Broker) -> None:
    ingest(broker, "om.gebiedsverbod", f.gebiedsverbod(area={"wijken": ["noord", "oost"]}))
    for recipient in ("boa-hor-noord", "boa-hor-oost", "interventieteam"):
        (got,) = records(broker, recipient, "handhaving-gebiedsverbod")
        assert set(got["record"]) == {"ref", "name", "date_of_birth", "description", "area",
                                      "valid_from", "valid_until", "legal_ground"}
        assert got["record"]["valid_until"] == "2026-07-31"
        assert got["record"]["area"] == {"wijken": ["noord", "oost"],
                                         "streets": ["Dorpsstraat"]}
        text = json.dumps(got)
        for secret in ("777888999", "13/123456-26", "woninginbraak"):
            assert secret not in text
    for recipient in ("boa-hor-zuid", "boa-hor-west"):
        assert records(broker, recipient) == []
        assert withheld_reason(broker, recipient, "handhaving-gebiedsverbod") == "out_of_scope"


@pytest.mark.parametrize(("now", "code"), [
    ("2026-04-30T21:59:59Z", "not_yet_valid"),  # 2026-04-30 local
    ("2026-04-30T22:00:00Z", None),             # 2026-05-01 local: first day
    ("2026-07-31T21:59:59Z", None),             # 2026-07-31 local: last day
    ("2026-07-31T22:00:00Z", "expired"),        # 2026-08-01 local
])
def test_area_ban_flows_only_within_its_validity(broker: Broker, now: str,
                                                 code: str | None) -> None:
    # decided before the earliest ingest time: a decided_at after it is from_the_future
    ingest(broker, "om.gebiedsverbod", f.gebiedsverbod(decided_at="2026-04-30T12:00:00Z"),
           now=parse_instant(now))
    assert withheld_reason(broker, "interventieteam", "handhaving-gebiedsverbod") == code


def test_area_ban_expiry_sends_one_tombstone_per_recipient(broker: Broker) -> None:
    ingest(broker, "om.gebiedsverbod", f.gebiedsverbod(area={"wijken": ["zuid"]}))
    (released,) = records(broker, "boa-hor-zuid")
    still_valid = parse_instant("2026-07-31T21:00:00Z")
    assert len(records(broker, "boa-hor-zuid", now=still_valid)) == 1
    after = parse_instant("2026-08-01T08:00:00Z")
    for _ in range(2):  # a second read past the end sends no second tombstone
        got = records(broker, "boa-hor-zuid", now=after)
        assert len(got) == 2
    tombstone = got[1]
    assert tombstone["tombstone"] is True
    if broker.settings.backend == "kafka":
        # A Kafka offset is a position in the topic and the release's transaction commit
        # marker takes one too, so the tombstone is later in the stream, not the next offset.
        assert tombstone["offset"] > released["offset"]
    else:
        assert tombstone["offset"] == 1
    assert tombstone["record"]["ref"] == released["record"]["ref"]
    assert tombstone["record"]["released_offset"] == released["offset"]
    assert len(records(broker, "interventieteam", now=after)) == 2
    expiries = audit_entries(broker, "tombstone")
    assert sorted(e["recipient"] for e in expiries) == ["boa-hor-zuid", "interventieteam"]


# -- 5. nazorg-detentie-terugkeer ----------------------------------------------------------

@pytest.mark.parametrize(("municipality", "released"), [
    ("Amstelveen", True), ("Aalsmeer", True), ("Ouder-Amstel", True), ("uithoorn", True),
    ("Diemen", True), ("Haarlem", False), ("Amsterdam", False),
])
def test_detention_returns_only_for_amstelland(broker: Broker, municipality: str,
                                               released: bool) -> None:
    ingest(broker, "om.detentie_uitstroom", f.detentie_uitstroom(municipality=municipality))
    got = records(broker, "casusregisseur-dt", "nazorg-detentie-terugkeer")
    assert len(got) == (1 if released else 0)
    if released:
        record = got[0]["record"]
        assert record["bsn"] == "123123123"
        assert record["needs"] == {"id_document": True, "housing": True, "income": False,
                                   "debts": True, "care": False}
        assert "risk_notes" not in record
        assert "parketnummer" not in record
        assert "GEHEIM-RISICO-NOTITIE" not in json.dumps(got)
    else:
        assert withheld_reason(broker, "casusregisseur-dt",
                               "nazorg-detentie-terugkeer") == "condition_not_met"


# -- 6. informatie-politie -----------------------------------------------------------------

def test_police_gets_observations_with_a_pseudonymous_boa(broker: Broker) -> None:
    first, second = f.boa_waarneming(), f.boa_waarneming()
    ingest(broker, "gemeente.boa_waarneming", first, second)
    got = records(broker, "politie-amstelland", "informatie-politie")
    assert len(got) == 2
    one = got[0]["record"]
    assert one["boa_id"] != "BOA-117"
    assert re.fullmatch(r"[0-9a-f]{32}", one["boa_id"])
    assert got[1]["record"]["boa_id"] == one["boa_id"]  # stable: links one boa's reports
    assert re.fullmatch(r"[0-9a-f]{32}", one["ref"])  # the record's ref, not its event id
    assert one["ref"] != got[1]["record"]["ref"]
    assert {k: v for k, v in one.items() if k not in ("boa_id", "ref")} == {
        **{k: v for k, v in first.items() if k != "boa_id"}}
    assert "BOA-117" not in json.dumps(got)


# -- default deny and the audit ------------------------------------------------------------

def test_a_recipient_outside_every_purpose_gets_nothing(broker: Broker) -> None:
    ingest(broker, "politie.woninginbraak", f.woninginbraak())
    ingest(broker, "om.gebiedsverbod", f.gebiedsverbod())
    assert records(broker, "casusregisseur-dt") == []
    assert records(broker, "politie-amstelland") == []


def test_every_decision_has_one_audit_entry_and_the_chain_verifies(broker: Broker) -> None:
    ingest(broker, "politie.woninginbraak", f.woninginbraak())
    plans = broker.plans.plans_for("politie.woninginbraak")
    found = decisions(broker)
    assert len(found) == len(plans) == 7
    assert {(d["recipient"], d["purpose"]) for d in found} == {
        (p.recipient, p.purpose) for p in plans}
    released = [d for d in found if d["decision"] == "release"]
    assert all(d["delivered_commitment"] and d["egress_offset"] is not None for d in released)
    subjects = {s["role"] for d in found for s in d["data_subjects"]}
    assert subjects == {"victim.bsn", "suspect.bsn"}
    raw = b"".join(broker.log.audit_entries())
    for value in (b"111222333", b"444555666", b"Jan Slachtoffer", b"Dorpsstraat"):
        assert value not in raw
    assert broker.verify_audit().ok


def test_bad_input_is_quarantined_with_its_reason_and_the_rest_flows(broker: Broker) -> None:
    good, extra = f.woninginbraak(), f.woninginbraak(app_version="1.2")
    report = broker.ingest_settled("politie", "politie.woninginbraak", f.numbered(
        good, "{this is not json", f.woninginbraak(attempt="yes"), good, extra), NOW)
    assert report.accepted == 2  # the good one and the one with an unknown field
    assert [fields for _, fields in report.dropped_fields] == [["app_version"]]
    notes = report.quarantined
    assert [q.reason_code for q in notes] == ["invalid_json", "wrong_type", "duplicate_event"]
    assert notes[1].reason == "attempt: expected a boolean, got string"
    assert notes[2].reason == DUPLICATE_REASON
    # each note names the input as its audit entry does, and nothing of its content
    assert [q.position for q in notes] == [
        e["detail"]["position"] for e in audit_entries(broker, "quarantine")]
    assert not any("Jan Slachtoffer" in q.reason or "Jan Slachtoffer" in q.position
                   for q in notes)
    assert broker.log.quarantine_count() == 3
    plans = broker.plans.plans_for("politie.woninginbraak")
    assert report.decided.events == 2
    assert report.decided.released + report.decided.withheld == 2 * len(plans)
    assert report.decided.released == sum(1 for d in decisions(broker)
                                          if d["decision"] == "release") > 0
    assert len(records(broker, "boa-hor-noord", "surveillance-woninginbraak")) == 2
    assert broker.verify_audit().ok
