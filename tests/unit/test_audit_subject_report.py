"""`audit subject-report`: complete for a person, empty for a stranger, nobody else in it.

The log is built through the pipeline (audit_support.build_log): three burglary victims,
a banned person whose ban ends (tombstones), a returnee, and reads by the recipients.
"Complete" is checked against a full decode scan of the log, which the report itself
never does (it goes through the subject index).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from broker import cli
from broker.audit.bundles import BundleError
from broker.audit.checkpoint import parse_verifier_key
from broker.audit.report_html import render_html
from broker.audit.sqlite_store import AUDIT_TABLES
from broker.audit.subject_report import verify_subject_report
from broker.keys import keyed_pseudonym
from broker.model.render import to_json
from tests.unit.audit_support import (
    BANNED,
    RETURNEE,
    STRANGER,
    VICTIMS,
    audit_of,
    build_log,
    open_broker,
    other_signer,
)

EVERYONE = [*VICTIMS, BANNED, RETURNEE]
ORIGIN = "covenant-broker/amstelveen-veiligheid"


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("subjects") / "data"
    build_log(path)
    return path


@pytest.fixture(scope="module")
def facts(log: Path) -> dict[str, Any]:
    """Pseudonyms and, by a full scan, every entry naming each person."""
    with open_broker(log) as broker:
        key = broker.keys.subject_key()
        audit = audit_of(broker)
        pseudonyms = {bsn: keyed_pseudonym(key, f"bsn:{bsn}") for bsn in [*EVERYONE, STRANGER]}
        scan: dict[str, list[dict[str, Any]]] = {p: [] for p in pseudonyms.values()}
        for _, data in audit.store.audit_entries(0):
            entry = to_json(audit.schema.decode(data))
            for subject in entry["data_subjects"]:
                scan[subject["pseudonym"]].append(entry)
        return {"pseudonyms": pseudonyms, "scan": scan, "key": audit.verifier_key()}


def report_for(log: Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["--data-dir", str(log), "--now", "2026-05-23T08:00:00Z", *args])
    return code, out.getvalue(), err.getvalue()


def json_report(log: Path, bsn: str) -> dict[str, Any]:
    code, out, err = report_for(log, "--json", "audit", "subject-report", "--bsn", bsn)
    assert code == 0, err
    report: dict[str, Any] = json.loads(out)
    return report


def items(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for s in ("disclosures", "withheld", "accesses", "other") for i in report[s]]


@pytest.mark.parametrize("bsn", EVERYONE)
def test_the_report_is_complete_for_a_subject(log: Path, facts: dict[str, Any],
                                              bsn: str) -> None:
    report = json_report(log, bsn)
    pseudonym = facts["pseudonyms"][bsn]
    expected = facts["scan"][pseudonym]
    assert expected, "the fixture must name everyone somewhere"
    assert report["subject"] == {"id_type": "bsn", "pseudonym": pseudonym}
    assert sorted(i["seq"] for i in items(report)) == [e["seq"] for e in expected]
    disclosed = [e["seq"] for e in expected if e["decision"] in ("release", "expire")]
    assert [i["seq"] for i in report["disclosures"]] == disclosed
    assert [i["seq"] for i in report["withheld"]] == [
        e["seq"] for e in expected if e["decision"] == "withhold"]
    for item in report["disclosures"]:
        entry = next(e for e in expected if e["seq"] == item["seq"])
        assert item["recipient"] == entry["recipient"]
        assert item["purpose"] == entry["purpose"]
        assert item["legal_basis"] == entry["legal_basis"]
        assert item["legal_basis"]
        assert item["covenant_id"] == "amstelveen-veiligheid"
        assert item["covenant_version"] == 1
        assert item["time"] == entry["start_time"]
        assert item["fields_released"] == entry["fields_released"]
        assert item["recipient_description"]


def test_a_victims_report_shows_what_went_to_whom(log: Path) -> None:
    report = json_report(log, VICTIMS[0])  # the noord burglary, victim consented
    released = {(i["recipient"], i["purpose"]) for i in report["disclosures"]}
    assert released == {("boa-hor-noord", "surveillance-woninginbraak"),
                        ("preventie", "preventie-woninginbraak"),
                        ("preventie", "slachtoffer-preventieadvies")}
    advice = next(i for i in report["disclosures"]
                  if i["purpose"] == "slachtoffer-preventieadvies")
    assert "victim.name" in advice["fields_released"]
    assert "victim.bsn" in advice["fields_withheld"]
    assert advice["roles"] == ["victim.bsn"]
    assert {i["recipient"] for i in report["withheld"]} == {
        "boa-hor-oost", "boa-hor-zuid", "boa-hor-west", "interventieteam"}
    assert all(i["reason_code"] for i in report["withheld"])
    assert {(i["recipient"], i["purpose"]) for i in report["accesses"]} == {
        ("boa-hor-noord", "surveillance-woninginbraak"),
        ("preventie", "slachtoffer-preventieadvies")}


def test_an_area_ban_report_includes_its_expiry_tombstones(log: Path) -> None:
    report = json_report(log, BANNED)
    kinds = [(i["action"], i["decision"], i["recipient"]) for i in report["disclosures"]]
    assert kinds == [("decide", "release", "boa-hor-noord"),
                     ("decide", "release", "boa-hor-oost"),
                     ("decide", "release", "interventieteam"),
                     ("tombstone", "expire", "boa-hor-noord"),
                     ("tombstone", "expire", "boa-hor-oost"),
                     ("tombstone", "expire", "interventieteam")]


def test_a_stranger_gets_an_empty_report(log: Path) -> None:
    report = json_report(log, STRANGER)
    assert items(report) == []
    assert report["summary"] == {"disclosures": 0, "withheld": 0, "accesses": 0, "other": 0,
                                 "not_yet_signed": 0}


@pytest.mark.parametrize("bsn", EVERYONE)
def test_no_other_subject_is_in_the_report(log: Path, facts: dict[str, Any],
                                           bsn: str, tmp_path: Path) -> None:
    html = tmp_path / "r.html"
    code, out, _ = report_for(log, "--json", "audit", "subject-report", "--bsn", bsn,
                              "--html", str(html))
    assert code == 0
    page = html.read_text()
    mine = facts["pseudonyms"][bsn]
    for other_bsn, other in facts["pseudonyms"].items():
        for text in (out, page):
            assert other_bsn not in text  # no BSN at all, not even the subject's own
            if other != mine:
                assert other not in text
    others = [p for p in facts["pseudonyms"].values() if p != mine]
    for item in items(json.loads(out)):
        proof = item["proof"]
        if "entry_base64" in proof:  # only entries that name nobody else carry their bytes
            entry = base64.b64decode(proof["entry_base64"])
            assert not any(p.encode() in entry for p in others)


def test_every_item_carries_a_proof_that_verifies_offline(log: Path, facts: dict[str, Any],
                                                          tmp_path: Path) -> None:
    report = json_report(log, VICTIMS[0])
    verifier = parse_verifier_key(facts["key"])
    assert verify_subject_report(report, verifier, ORIGIN) == len(items(report))
    assert {("entry_base64" in i["proof"]) for i in items(report)} == {True, False}
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    code, out, _ = report_for(log, "audit", "verify-report", str(path), "--public-key",
                              facts["key"])
    assert code == 0, out
    report["disclosures"][0]["proof"]["log_index"] += 1
    with pytest.raises(BundleError, match="disclosures item 1: the proof is for entry 2"):
        verify_subject_report(report, verifier, ORIGIN)
    report["disclosures"][0]["proof"]["log_index"] -= 1
    report["disclosures"][0]["proof"]["inclusion_proof"].pop()
    with pytest.raises(BundleError, match="disclosures item 1: not proven: inclusion proof "
                       "too short"):
        verify_subject_report(report, verifier, ORIGIN)
    with pytest.raises(BundleError, match="checkpoint: no signature"):
        verify_subject_report(report, parse_verifier_key(other_signer(ORIGIN).verifier_key()),
                              ORIGIN)


def test_the_html_page_is_self_contained_dutch_and_escaped(log: Path, tmp_path: Path) -> None:
    html = tmp_path / "inzage.html"
    code, out, _ = report_for(log, "audit", "subject-report", "--bsn", VICTIMS[0],
                              "--html", str(html))
    assert code == 0
    assert "3 disclosures" in out
    page = html.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert '<html lang="nl">' in page
    for label in ("Verstrekt (3)", "Niet verstrekt (4)", "Ontvanger", "Doel", "Rechtsgrond",
                  "Verstrekte gegevens", "Convenant", "amstelveen-veiligheid, versie 1",
                  "10 mei 2026, 14:00 uur", "Bewijs van opname"):
        assert label in page, label
    lowered = page.lower()
    for external in ("<script", "<link", "src=", "http://", "https://", "@import", "url("):
        assert external not in lowered, external
    report = json_report(log, VICTIMS[0])
    report["disclosures"][0]["reason"] = "<script>alert(1)</script>"
    assert "<script>alert" not in render_html(report, ZoneInfo("Europe/Amsterdam"))


def test_the_bsn_is_never_logged_or_stored(log: Path, tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "report.json"
    code, stdout, stderr = report_for(log, "audit", "subject-report", "--bsn", STRANGER,
                                      "--out", str(out))
    assert code == 0
    for text in (stdout, stderr, caplog.text, out.read_text()):
        assert STRANGER not in text
    for path in log.rglob("*"):
        if path.is_file():
            assert STRANGER.encode() not in path.read_bytes(), path
    # a person the log knows: the BSN is in no audit table, output or log line either
    code, stdout, stderr = report_for(log, "audit", "subject-report", "--bsn", VICTIMS[0])
    assert code == 0
    assert VICTIMS[0] not in stdout + stderr + caplog.text
    db = sqlite3.connect(log / "broker.db")
    try:
        for table in ("audit", *AUDIT_TABLES):
            for row in db.execute(f"SELECT * FROM {table}"):
                assert VICTIMS[0] not in repr(row), table
    finally:
        db.close()


def test_a_pseudonym_finds_the_same_report(log: Path, facts: dict[str, Any]) -> None:
    pseudonym = facts["pseudonyms"][RETURNEE]
    code, out, _ = report_for(log, "--json", "audit", "subject-report", "--pseudonym",
                              pseudonym)
    assert code == 0
    by_pseudonym = json.loads(out)
    assert [i["seq"] for i in items(by_pseudonym)] == [
        i["seq"] for i in items(json_report(log, RETURNEE))]
    assert by_pseudonym["subject"]["id_type"] == "pseudonym"
    code, _, err = report_for(log, "audit", "subject-report", "--pseudonym", "xyz")
    assert code == 2
    assert "32 hex digits" in err
    code, _, err = report_for(log, "audit", "subject-report", "--bsn", "12-34")
    assert code == 2
    assert "12-34" not in err


def test_the_subject_index_is_used_not_a_scan(log: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    with open_broker(log) as broker:
        audit = audit_of(broker)

        def no_scan(start: int = 0) -> Any:
            raise AssertionError("the subject report must not scan the log")

        monkeypatch.setattr(audit.store, "audit_entries", no_scan)
        pseudonym = keyed_pseudonym(broker.keys.subject_key(), f"bsn:{BANNED}")
        report = audit.subject_report(pseudonym, "bsn", "2026-05-23T08:00:00Z")
        assert len(report["disclosures"]) == 6


def test_verify_report_against_the_log_finds_an_item_the_report_leaves_out(
        log: Path, facts: dict[str, Any], tmp_path: Path) -> None:
    """The proofs show each item is in the log; only a re-derivation from the log shows
    that none is missing (issue 15 finding 1: a report made from an edited index)."""
    report = json_report(log, VICTIMS[0])
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    args = ("audit", "verify-report", str(path), "--public-key", facts["key"], "--against-log")
    code, out, _ = report_for(log, *args)
    assert code == 0, out
    left_out = report["disclosures"].pop(0)
    path.write_text(json.dumps(report))
    code, out, _ = report_for(log, "audit", "verify-report", str(path), "--public-key",
                              facts["key"])
    assert code == 0, out  # every remaining item still proves: the proofs cannot tell
    code, out, _ = report_for(log, *args)
    assert code == 1
    assert f"entry {left_out['seq']}: names the person, the report leaves it out" in out


def test_verify_report_against_the_log_compares_the_stated_root(
        log: Path, facts: dict[str, Any], tmp_path: Path) -> None:
    """`complete_up_to` is (size, root): a report whose root is not the log's root at that
    size is about another log (or this one before an edit), exit 1 naming both roots."""
    report = json_report(log, VICTIMS[1])
    honest = report["complete_up_to"]["root"]
    size = report["complete_up_to"]["size"]
    report["complete_up_to"]["root"] = "ab" * 32
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    args = ("audit", "verify-report", str(path), "--public-key", facts["key"])
    code, out, _ = report_for(log, *args)
    assert code == 0, out  # the proofs are against the signed note: they cannot tell
    code, out, _ = report_for(log, *args, "--against-log")
    assert code == 1
    assert (f"the report states root {'ab' * 32} at size {size}, the log's root at that "
            f"size is {honest}") in out


def test_the_report_reads_the_lifts_through_an_index_not_a_scan(tmp_path: Path) -> None:
    """Every subject report asks for the control entries (the confidential lifts); on a
    large log a scan of audit_index for them was the whole report's cost (issue 14)."""
    from broker.audit.subject_report import lifted_pairs

    data = tmp_path / "data"
    build_log(data)
    with open_broker(data) as broker:
        audit = audit_of(broker)
        store = audit.store
        statements: list[str] = []
        db = store.db  # type: ignore[attr-defined]
        db.set_trace_callback(statements.append)
        try:
            lifted_pairs(store, audit.schema, store.audit_size())
        finally:
            db.set_trace_callback(None)
        query = next(s for s in statements if "audit_index" in s)
        plan = " ".join(str(row[3]) for row in db.execute(f"EXPLAIN QUERY PLAN {query}"))
    assert "audit_index_control" in plan
