"""Corrections and withdrawals from the sources (AVG art. 19, issue 13 item 7): each
recipient of the original gets exactly one retraction (a tombstone, cause rectified or
withdrawn) and, where the covenant releases the corrected event, one new record; only the
owning source may revise an event; a revision of an event never stored is quarantined;
replay applies revisions in their order.

The tests named in SHARED speak to the application surface both backends share
(Broker.ingest_settled, Broker.ingest_revisions_settled, consume, the audit entries) and
take the `backend`-parametrised `broker` of tests/unit/test_scenarios.py: "embedded" here;
tests/integration/test_kafka_corrections.py collects them again on a real Kafka."""

from __future__ import annotations

import json
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.app.lifecycle import replay
from broker.app.service import Broker, Delivered, IngestReport
from broker.clock import parse_instant
from broker.config import load_settings
from broker.model.json_input import convert
from broker.model.render import to_json
from broker.pipeline.decide import Decider
from broker.pipeline.port import StoredEvent
from broker.pipeline.signatures import sign
from broker.policy.decision import Release
from tests import factories as f
from tests.unit.test_cli import run
from tests.unit.web_support import open_web

NOW = parse_instant("2026-05-10T12:00:00Z")
LATER = NOW + timedelta(hours=2)
RECIPIENTS = ("boa-hor-noord", "boa-hor-oost", "boa-hor-zuid", "boa-hor-west",
              "interventieteam", "preventie")


@pytest.fixture(params=["embedded"])
def backend(request: pytest.FixtureRequest) -> str:
    """The backend the SHARED tests run on (the Kafka module overrides the parameter)."""
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


def stream(broker: Broker, recipient: str, now: Any = LATER) -> list[Delivered]:
    return broker.consume(recipient, None, 0, now)


def by_event(delivered: list[Delivered], broker: Broker, recipient: str
             ) -> dict[tuple[str, int], list[Delivered]]:
    """A recipient's deliveries grouped by (purpose, store offset of the event)."""
    offsets = {(r.purpose, r.offset): r.event_offset
               for r in broker.log.read_egress(recipient, None, 0)}
    out: dict[tuple[str, int], list[Delivered]] = {}
    for d in delivered:
        out.setdefault((d.purpose, offsets[(d.purpose, d.offset)]), []).append(d)
    return out


def audit(broker: Broker, name: str | None = None) -> list[dict[str, Any]]:
    schema = broker.registry.get("records.audit_entry")
    out = [schema.decode(d) for d in broker.log.audit_entries()]
    return [e for e in out if name is None or e["name"] == name]


def withdrawal(event_id: str, reason: str = "ten onrechte verzonden") -> str:
    return json.dumps({"event_id": event_id, "reason": reason})


def ingest(broker: Broker, event_type: str, *events: dict[str, Any], now: Any = NOW) -> None:
    """New events, settled (on Kafka: published and served until idle)."""
    report = broker.ingest_settled(event_type.split(".", 1)[0], event_type,
                                   f.numbered(*events), now)
    assert report.quarantined == [], report.quarantined


def revise(broker: Broker, action: str, source: str, event_type: str,
           *lines: dict[str, Any] | str, now: Any = LATER) -> IngestReport:
    """Corrections or withdrawals, settled (on Kafka: published with their action header
    and served until idle)."""
    return broker.ingest_revisions_settled(action, source, event_type, f.numbered(*lines),
                                           now)


def in_input_order(report: IngestReport) -> list[tuple[str, str]]:
    """(position, reason code) of each quarantined input in the order it was input:
    "line N" on the embedded backend, topic:partition:offset on Kafka."""
    def order(position: str) -> tuple[int, ...]:
        return tuple(int(part) for part in position.replace("line ", "").split(":")[-2:]
                     if part.isdigit())
    return sorted(((q.position, q.reason_code) for q in report.quarantined),
                  key=lambda item: order(item[0]))


# The scenarios tests/integration/test_kafka_corrections.py runs again on Kafka.
SHARED = (
    "test_correction_retracts_once_per_earlier_recipient_and_releases_where_allowed",
    "test_identical_correction_resent_is_a_duplicate_and_retracts_nothing_more",
    "test_withdrawal_retracts_each_recipient_once_and_no_expiry_follows",
    "test_a_source_cannot_withdraw_another_sources_event",
    "test_withdrawal_or_correction_of_an_unknown_event_is_quarantined",
    "test_subject_report_shows_the_retraction_chain",
    "test_replay_applies_corrections_and_withdrawals_in_order",
    "test_a_read_after_a_correction_names_the_corrected_events_subject",
    "test_a_corrected_ban_expires_once_by_its_corrected_end",
)


def test_correction_retracts_once_per_earlier_recipient_and_releases_where_allowed(
        broker: Broker) -> None:
    burglary = f.woninginbraak()
    ingest(broker, "politie.woninginbraak", burglary)
    before = {r: stream(broker, r, NOW) for r in RECIPIENTS}
    assert [d.purpose for d in before["boa-hor-noord"]] == ["surveillance-woninginbraak"]
    assert before["boa-hor-oost"] == []
    # the police fix a wrong address: the burglary was in oost, not noord
    corrected = dict(burglary, address=dict(burglary["address"], wijk="oost",
                                            street="Ouderkerkerlaan", postcode="1183 AB"))

    report = revise(broker, "correction", "politie", "politie.woninginbraak", corrected)

    assert report.accepted == 1
    assert report.quarantined == []
    noord = stream(broker, "boa-hor-noord")
    assert [(d.kind, d.record.get("cause")) for d in noord] == [
        ("record", None), ("tombstone", "rectified")]
    assert noord[1].record["ref"] == noord[0].record["ref"]
    assert noord[1].record["released_offset"] == noord[0].offset
    oost = stream(broker, "boa-hor-oost")  # did not get the original, qualifies now
    assert [d.kind for d in oost] == ["record"]
    assert oost[0].record["street"] == "Ouderkerkerlaan"
    preventie = stream(broker, "preventie")  # two purposes: one retraction and record each
    for purpose, items in by_event(preventie, broker, "preventie").items():
        assert [d.kind for d in items] == ["record", "tombstone", "record"], purpose
        assert items[1].record["cause"] == "rectified"
        assert items[2].record["street"] == "Ouderkerkerlaan"
    retractions = [e for e in audit(broker, "tombstone") if e["reason_code"] == "rectified"]
    assert len(retractions) == 3  # noord surveillance, preventie x2
    assert all(e["decision"] == "retract" and e["detail"]["cause"] == "rectified"
               and e["event_id"] == burglary["event_id"] and e["data_subjects"]
               for e in retractions)
    assert len(audit(broker, "correction")) == 1
    assert report.retractions == 3
    assert broker.verify_audit().ok


def test_identical_correction_resent_is_a_duplicate_and_retracts_nothing_more(
        broker: Broker) -> None:
    burglary = f.woninginbraak()
    ingest(broker, "politie.woninginbraak", burglary)
    corrected = dict(burglary, modus_operandi="flipperen")
    revise(broker, "correction", "politie", "politie.woninginbraak", corrected)
    again = revise(broker, "correction", "politie", "politie.woninginbraak", corrected,
                   corrected)
    assert again.accepted == 0
    assert [q.reason_code for q in again.quarantined] == ["duplicate_correction"] * 2
    assert again.retractions == 0
    kinds = Counter(d.kind for d in stream(broker, "boa-hor-noord"))
    assert kinds == Counter({"record": 2, "tombstone": 1})


def test_withdrawal_retracts_each_recipient_once_and_no_expiry_follows(broker: Broker) -> None:
    ban = f.gebiedsverbod()  # noord and oost, and interventieteam
    ingest(broker, "om.gebiedsverbod", ban)
    report = revise(broker, "withdrawal", "om", "om.gebiedsverbod",
                    withdrawal(ban["event_id"], "vroeg opgeheven"))
    assert report.accepted == 1
    assert report.retractions == 3
    after_ban = parse_instant("2026-08-02T08:00:00Z")  # past valid_until 2026-07-31
    assert broker.sweep_expiries(after_ban) == 0
    for recipient in ("boa-hor-noord", "boa-hor-oost", "interventieteam"):
        got = stream(broker, recipient)
        assert [(d.kind, d.record.get("cause")) for d in got] == [
            ("record", None), ("tombstone", "withdrawn")], recipient
    withdrawn = audit(broker, "withdrawal")
    assert len(withdrawn) == 1
    assert withdrawn[0]["reason"] == "vroeg opgeheven"
    assert withdrawn[0]["data_subjects"]  # names the person of the event, by pseudonym
    # nothing can follow a withdrawal
    late = revise(broker, "correction", "om", "om.gebiedsverbod", dict(ban, legal_ground="x"))
    assert [q.reason_code for q in late.quarantined] == ["already_withdrawn"]


def test_a_source_cannot_withdraw_another_sources_event(broker: Broker) -> None:
    ban = f.gebiedsverbod()
    ingest(broker, "om.gebiedsverbod", ban)
    quarantined = broker.log.quarantine_count()
    report = revise(broker, "withdrawal", "gemeente", "om.gebiedsverbod",
                    withdrawal(ban["event_id"]))
    assert report.accepted == 0
    assert [q.reason_code for q in report.quarantined] == ["source_not_owner"]
    assert broker.log.quarantine_count() == quarantined + 1
    assert all(d.kind == "record" for r in ("boa-hor-noord", "interventieteam")
               for d in stream(broker, r))
    # nor correct it (the corrected event's type is not its to send either)
    fixed = revise(broker, "correction", "gemeente", "om.gebiedsverbod",
                   dict(ban, legal_ground="x"))
    assert [q.reason_code for q in fixed.quarantined] == ["source_not_owner"]


def test_withdrawal_or_correction_of_an_unknown_event_is_quarantined(broker: Broker) -> None:
    stored = f.gebiedsverbod()
    ingest(broker, "om.gebiedsverbod", stored)
    quarantined = broker.log.quarantine_count()
    report = revise(broker, "withdrawal", "om", "om.gebiedsverbod",
                    withdrawal(f.new_id()), "{not json",
                    json.dumps({"event_id": stored["event_id"]}))
    codes = in_input_order(report)
    assert [code for _, code in codes] == ["unknown_original", "invalid_json",
                                           "missing_field"]
    if broker.backend.ingress is None:  # the embedded backend names input lines
        assert [position for position, _ in codes] == ["line 1", "line 2", "line 3"]
    assert broker.log.quarantine_count() == quarantined + 3
    quarantine_entries = [e for e in audit(broker, "quarantine")
                          if e["reason_code"] == "unknown_original"]
    assert len(quarantine_entries) == 1
    other_type = revise(broker, "correction", "politie", "politie.woninginbraak",
                        f.woninginbraak())
    assert [q.reason_code for q in other_type.quarantined] == ["unknown_original"]


def test_subject_report_shows_the_retraction_chain(broker: Broker) -> None:
    burglary = f.woninginbraak()
    ingest(broker, "politie.woninginbraak", burglary)
    revise(broker, "withdrawal", "politie", "politie.woninginbraak",
           withdrawal(burglary["event_id"]))
    pseudonym = broker.sealer.subject_pseudonym("bsn", burglary["victim"]["bsn"])
    entries = [e for e in audit(broker) if any(
        s["pseudonym"] == pseudonym for s in e["data_subjects"])]
    chain = [(e["name"], e["decision"], e["reason_code"]) for e in entries]
    assert ("withdrawal", "withdraw", "withdrawal_request") in chain
    assert ("tombstone", "retract", "withdrawn") in chain
    if not broker.backend.audit_is_live:
        return  # Kafka: the subject report reads the integrated log (`audit integrate`)
    assert broker.audit is not None
    report = broker.audit.subject_report(pseudonym, "bsn", "2026-05-10T14:00:00Z")
    disclosed = {(i["action"], i["decision"], i["reason_code"])
                 for i in report["disclosures"]}
    assert ("tombstone", "retract", "withdrawn") in disclosed


def test_replay_applies_corrections_and_withdrawals_in_order(broker: Broker) -> None:
    first, second = f.woninginbraak(), f.woninginbraak()
    ingest(broker, "politie.woninginbraak", first, second)
    revise(broker, "correction", "politie", "politie.woninginbraak",
           dict(first, modus_operandi="flipperen"))
    revise(broker, "withdrawal", "politie", "politie.woninginbraak",
           withdrawal(second["event_id"]))
    out = replay(broker, "boa-hor-noord", "surveillance-woninginbraak",
                 broker.covenant.covenant.version, None)
    shape = [(d.kind, d.record.get("modus_operandi"), d.record.get("cause"))
             for d in out.records]
    assert shape == [("record", "cilinder_trekken", None), ("record", "cilinder_trekken", None),
                     ("tombstone", None, "rectified"), ("record", "flipperen", None),
                     ("tombstone", None, "withdrawn")]
    live = [(d.kind, d.record.get("modus_operandi")) for d in
            stream(broker, "boa-hor-noord")]
    assert live == [(d.kind, d.record.get("modus_operandi")) for d in out.records]


# -- the property: whatever the sequence, one live record per event, as decided afresh -----

_WIJKEN = ("noord", "oost", "zuid")
_step = st.one_of(
    st.tuples(st.just("event"), st.integers(0, 2), st.sampled_from(_WIJKEN), st.booleans()),
    st.tuples(st.just("correction"), st.integers(0, 2), st.sampled_from(_WIJKEN),
              st.booleans()),
    st.tuples(st.just("withdrawal"), st.integers(0, 2), st.just("-"), st.just(False)),
    # the interventieteam gets burglaries only while the theme is on: a correction is
    # decided under the control state of its own time
    st.tuples(st.just("theme"), st.just(0), st.just("-"), st.booleans()),
)


def _burglary(event_id: str, wijk: str, consent: bool) -> dict[str, Any]:
    return f.woninginbraak(event_id=event_id, address={"wijk": wijk},
                           victim={"consent_prevention_advice": consent})


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(steps=st.lists(_step, min_size=1, max_size=8))
def test_each_stream_ends_with_at_most_one_live_record_per_event_as_decided_afresh(
        steps: list[tuple[str, int, str, bool]]) -> None:
    with tempfile.TemporaryDirectory() as data_dir:  # a fresh data dir per example
        _check_sequence(own_broker(Path(data_dir)), steps)


def own_broker(data_dir: Path) -> Broker:
    return Broker(load_settings(overrides={"data_dir": data_dir}, environ={}))


def _check_sequence(broker: Broker, steps: list[tuple[str, int, str, bool]]) -> None:
    try:
        ids = [f.new_id() for _ in range(3)]
        latest: dict[str, tuple[dict[str, Any], Any]] = {}  # id -> (version, decided at)
        withdrawn: set[str] = set()
        for hour, (action, n, wijk, flag) in enumerate(steps):
            at = NOW + timedelta(hours=hour)
            event_id = ids[n]
            if action == "theme":
                broker.switch_theme("woninginbraak", flag, at)
            elif action == "event":
                event = _burglary(event_id, wijk, flag)
                broker.ingest("politie", "politie.woninginbraak", f.lines(event), at)
                latest.setdefault(event_id, (event, at))
            elif action == "correction":
                event = _burglary(event_id, wijk, flag)
                report = broker.ingest_revisions("correction", "politie",
                                                 "politie.woninginbraak", f.lines(event), at)
                if report.accepted:
                    latest[event_id] = (event, at)
            else:
                broker.ingest_revisions("withdrawal", "politie", "politie.woninginbraak",
                                        f.lines(withdrawal(event_id)), at)
                if event_id in latest:
                    withdrawn.add(event_id)
        originals = broker.revision_log.originals("politie.woninginbraak", ids)
        for recipient in RECIPIENTS:
            records = broker.log.read_egress(recipient, None, 0)
            ended = {(r.purpose, int(d.record["released_offset"])) for r, d in
                     ((r, broker.render(r)) for r in records) if r.kind == "tombstone"}
            live: dict[tuple[str, int], list[dict[str, Any]]] = {}
            for r in records:
                if r.kind == "record" and (r.purpose, r.offset) not in ended:
                    live.setdefault((r.purpose, r.event_offset), []).append(
                        broker.render(r).record)
            for event_id, (event, at) in latest.items():
                original = originals[event_id]
                ctx = broker.context(at)
                decider: Decider = broker.decider_at(ctx)
                for plan in decider.plans.plans_for("politie.woninginbraak"):
                    if plan.recipient != recipient:
                        continue
                    got = live.get((plan.purpose, original.offset), [])
                    assert len(got) <= 1
                    if event_id in withdrawn:
                        assert got == []
                        continue
                    fresh = StoredEvent(original.offset, original.event_type,
                                        original.source, event_id,
                                        broker.registry.get("politie.woninginbraak").encode(
                                            _encoded(broker, event)),
                                        "t", original.ingested_ms)
                    decision = decider.decide_one(plan, fresh, decider.open(fresh), ctx)
                    if isinstance(decision, Release):
                        assert len(got) == 1
                        assert got[0] == to_json(decision.view)
                    else:
                        assert got == []
        assert broker.verify_audit().ok
    finally:
        broker.close()


def _encoded(broker: Broker, event: dict[str, Any]) -> dict[str, Any]:
    return convert(broker.registry.get("politie.woninginbraak").raw, event,
                   broker.limits).record


def test_a_data_dir_from_before_revisions_opens_and_gains_the_table(tmp_path: Path) -> None:
    broker = own_broker(tmp_path / "data")
    ban = f.gebiedsverbod()
    broker.ingest("om", "om.gebiedsverbod", f.lines(ban), NOW)
    path = broker.settings.data_dir / "broker.db"
    broker.close()
    db = sqlite3.connect(path)  # as a data dir made before this change: no revisions table
    db.executescript("DROP TABLE revisions;")
    db.close()
    again = own_broker(tmp_path / "data")
    try:
        report = again.ingest_revisions("withdrawal", "om", "om.gebiedsverbod",
                                        f.lines(withdrawal(ban["event_id"])), LATER)
        assert report.retractions == 3
        assert again.verify_audit().ok
    finally:
        again.close()


def test_the_recipient_api_delivers_a_retraction_with_its_cause(tmp_path: Path) -> None:
    for web in open_web(tmp_path / "data"):
        at = web.clock.now

        def lift(b: Broker, at: Any = at) -> None:
            ban = b.revision_log.originals(
                "om.gebiedsverbod", [s.event_id for s in b.log.read_store(-1, 100)
                                     if s.event_type == "om.gebiedsverbod"])
            (event_id,) = ban
            b.ingest_revisions("withdrawal", "om", "om.gebiedsverbod",
                               f.lines(withdrawal(event_id)), at)

        web.run(lift)
        got = web.client.get("/v1/streams/handhaving-gebiedsverbod/records",
                             headers=web.token("boa-hor-oost"))
        assert got.status_code == 200, got.text
        records = got.json()["records"]
        assert [r.get("tombstone_cause") for r in records] == [None, "withdrawn"]
        assert records[1]["record"]["ref"] == records[0]["record"]["ref"]


def test_a_read_after_a_correction_names_the_corrected_events_subject(broker: Broker) -> None:
    burglary = f.woninginbraak()
    ingest(broker, "politie.woninginbraak", burglary)
    fixed = dict(burglary, victim=dict(burglary["victim"], bsn="123456782"))  # wrong person
    revise(broker, "correction", "politie", "politie.woninginbraak", fixed)
    stream(broker, "preventie")
    named = {s["pseudonym"] for s in audit(broker, "access")[-1]["data_subjects"]}
    assert broker.sealer.subject_pseudonym("bsn", "123456782") in named


def test_revisions_are_signed_like_any_input(make_broker: Any, tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    public = tmp_path / "om.pub"
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    broker: Broker = make_broker(sources={"om": {"public_key": str(public)}})
    ban = json.dumps(f.gebiedsverbod()).encode()
    broker.ingest("om", "om.gebiedsverbod", [("line 1", ban)], NOW,
                  {"line 1": sign(key, "om.gebiedsverbod", ban)})
    lift = withdrawal(json.loads(ban)["event_id"]).encode()
    unsigned = broker.ingest_revisions("withdrawal", "om", "om.gebiedsverbod",
                                       [("line 1", lift)], LATER)
    assert [q.reason_code for q in unsigned.quarantined] == ["signature_missing"]
    assert unsigned.retractions == 0
    signed = broker.ingest_revisions("withdrawal", "om", "om.gebiedsverbod",
                                     [("line 1", lift)], LATER,
                                     {"line 1": sign(key, "om.gebiedsverbod", lift)})
    assert signed.accepted == 1
    assert signed.retractions == 3


def test_cli_ingest_correction_and_withdrawal(tmp_path: Path) -> None:
    data = tmp_path / "data"
    burglary, ban = f.woninginbraak(), f.gebiedsverbod()
    (tmp_path / "b.jsonl").write_text(json.dumps(burglary) + "\n")
    (tmp_path / "v.jsonl").write_text(json.dumps(ban) + "\n")
    fixed = dict(burglary, modus_operandi="flipperen")
    (tmp_path / "fix.jsonl").write_text(json.dumps(fixed) + "\n")
    (tmp_path / "lift.jsonl").write_text(withdrawal(ban["event_id"]) + "\n"
                                         + withdrawal(f.new_id()) + "\n")
    assert run("ingest", "--source", "politie", "--type", "politie.woninginbraak",
               tmp_path / "b.jsonl", data=data).returncode == 0
    assert run("ingest", "--source", "om", "--type", "om.gebiedsverbod",
               tmp_path / "v.jsonl", data=data).returncode == 0
    done = run("--json", "ingest", "--source", "politie", "--type", "politie.woninginbraak",
               "--correction", tmp_path / "fix.jsonl", data=data)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert (out["action"], out["accepted"], out["retractions"]) == ("correction", 1, 3)
    done = run("--json", "ingest", "--source", "om", "--type", "om.gebiedsverbod",
               "--withdrawal", tmp_path / "lift.jsonl", data=data)
    out = json.loads(done.stdout)
    assert (out["action"], out["accepted"], out["retractions"]) == ("withdrawal", 1, 3)
    assert [q["reason_code"] for q in out["quarantine"]] == ["unknown_original"]
    consumed = run("--json", "consume", "--recipient", "boa-hor-noord", data=data)
    causes = [json.loads(line).get("tombstone_cause") for line in consumed.stdout.splitlines()]
    assert sorted(c for c in causes if c) == ["rectified", "withdrawn"]
    both = run("ingest", "--source", "om", "--type", "om.gebiedsverbod", tmp_path / "v.jsonl",
               "--withdrawal", tmp_path / "lift.jsonl", data=data)
    assert both.returncode == 2
    assert "not both" in both.stderr


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.one_of(
    st.binary(max_size=200),
    st.builds(lambda i, r: json.dumps({"event_id": i, "reason": r}).encode(),
              st.one_of(st.uuids().map(str), st.text(max_size=40)), st.text(max_size=40)),
), min_size=1, max_size=5), action=st.sampled_from(["correction", "withdrawal"]))
def test_any_revision_input_is_accepted_or_quarantined_never_dropped(
        broker: Broker, lines: list[bytes], action: str) -> None:
    inputs = [(f"line {i}", line) for i, line in enumerate(lines, 1)]
    quarantined = broker.log.quarantine_count()
    report = broker.ingest_revisions(action, "om", "om.gebiedsverbod", inputs, LATER)
    assert report.accepted == 0  # nothing was stored to revise
    assert len(report.quarantined) == len(lines)
    assert broker.log.quarantine_count() == quarantined + len(lines)


def test_a_corrected_ban_expires_once_by_its_corrected_end(broker: Broker) -> None:
    ban = f.gebiedsverbod()  # valid until 2026-07-31
    ingest(broker, "om.gebiedsverbod", ban)
    revise(broker, "correction", "om", "om.gebiedsverbod", dict(ban, valid_until="2026-06-30"))
    assert broker.sweep_expiries(parse_instant("2026-07-01T08:00:00Z")) == 3
    assert broker.sweep_expiries(parse_instant("2026-08-02T08:00:00Z")) == 0
    got = stream(broker, "boa-hor-noord", parse_instant("2026-08-02T08:00:00Z"))
    assert [(d.kind, d.record.get("cause"), d.record.get("valid_until")) for d in got] == [
        ("record", None, "2026-07-31"), ("tombstone", "rectified", None),
        ("record", None, "2026-06-30"), ("tombstone", "expired", None)]


def test_a_correction_is_decided_on_its_own_payload_not_the_originals_plaintext() -> None:
    """An original stored by the batch in hand carries its plaintext (`fresh`) so the
    decision need not open it; the corrected version must not inherit it, or the
    correction is decided on the old values (found when seal-once met Kafka corrections:
    an event and its correction in one batch released the old record again)."""
    from broker.crypto.sealing import Fresh
    from broker.pipeline.corrections import as_stored
    from broker.pipeline.port import StoredRevision

    fresh = Fresh(schema=None, record={"modus_operandi": "cilinder_trekken"},  # type: ignore[arg-type]
                  sealed=())
    original = StoredEvent(7, "politie.woninginbraak", "politie", "e-1", b"old", "t" * 32, 1,
                           fresh=fresh)
    revision = StoredRevision(0, "correction", "politie.woninginbraak", "politie", "e-1", 7,
                              b"new", "", "d", "u" * 32, 2, 7)
    corrected = as_stored(revision, original)
    assert (corrected.offset, corrected.payload, corrected.trace_id) == (7, b"new", "u" * 32)
    assert corrected.fresh is None
