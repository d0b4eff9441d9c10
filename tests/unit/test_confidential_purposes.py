"""Confidential purposes (issue 13 item 6): left out of subject reports until a four-eyes lift.

The covenant is the sample one with one purpose marked `confidential: true`; the log is
built through the pipeline. The report is made and checked through the CLI, as the FG and
an auditor run it: the restricted report says a restriction applies (not which purpose, not
how many), `verify-report --against-log` re-derives it under the same rule, one approver is
not enough, the same person twice is refused, and after the lift the entries show.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import strategies as st

from broker import cli
from broker.app import confidential
from broker.app.service import Broker
from broker.audit.report_html import render_html
from broker.audit.store import QueryFilter
from broker.errors import CovenantError, PolicyError
from broker.policy.covenant import parse_covenant
from tests import factories as f
from tests.unit.audit_support import NOW, audit_of, settings_for

REPO = Path(__file__).resolve().parents[2]
SECRET = "slachtoffer-preventieadvies"  # stands in for a running investigation's purpose
VICTIM = "100000001"
AT = "2026-05-23T08:00:00Z"


def confidential_covenant(folder: Path) -> Path:
    text = (REPO / "policies" / "amstelveen.yaml").read_text(encoding="utf-8")
    marked = text.replace(f"  {SECRET}:\n", f"  {SECRET}:\n    confidential: true\n", 1)
    assert marked != text
    path = folder / "covenant.yaml"
    path.write_text(marked, encoding="utf-8")
    return path


def build(data_dir: Path, policy: Path) -> None:
    broker = Broker(settings_for(data_dir, policy=policy))
    try:
        broker.ingest("politie", "politie.woninginbraak", f.lines(
            f.woninginbraak(victim={"bsn": VICTIM, "name": "Slachtoffer"}, suspect=None),
            f.woninginbraak(victim={"bsn": "100000002", "name": "Ander"}, suspect=None)), NOW)
        broker.consume("preventie", SECRET, 0, NOW)
        broker.consume("boa-hor-noord", None, 0, NOW)
    finally:
        broker.close()


@pytest.fixture
def log(tmp_path: Path) -> tuple[Path, Path]:
    policy = confidential_covenant(tmp_path)
    data = tmp_path / "data"
    build(data, policy)
    return data, policy


def run(log: tuple[Path, Path], *args: str) -> tuple[int, str, str]:
    data, policy = log
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["--data-dir", str(data), "--policy", str(policy), "--now", AT, *args])
    return code, out.getvalue(), err.getvalue()


def report(log: tuple[Path, Path], bsn: str = VICTIM) -> dict[str, Any]:
    code, out, err = run(log, "--json", "audit", "subject-report", "--bsn", bsn)
    assert code == 0, err
    found: dict[str, Any] = json.loads(out)
    return found


def purposes(found: dict[str, Any]) -> set[str]:
    return {item["purpose"] for section in ("disclosures", "withheld", "accesses", "other")
            for item in found[section] if item["purpose"]}


def verified_against_log(log: tuple[Path, Path], found: dict[str, Any], folder: Path
                         ) -> tuple[int, str]:
    code, out, _ = run(log, "--json", "audit", "public-key")
    key = json.loads(out)["verifier_key"]
    path = folder / "report.json"
    path.write_text(json.dumps(found), encoding="utf-8")
    code, out, _ = run(log, "audit", "verify-report", str(path), "--public-key", key,
                       "--against-log")
    return code, out


def lift(log: tuple[Path, Path], step: str, approver: str) -> tuple[int, str, str]:
    return run(log, "policy", "lift", step, "--purpose", SECRET, "--covenant-version", "1",
               "--approver", approver)


def lift_entries(log: tuple[Path, Path]) -> list[dict[str, Any]]:
    data, policy = log
    broker = Broker(settings_for(data, policy=policy))
    try:
        return [e for e in audit_of(broker).query(QueryFilter(name="control"))
                if e["detail"].get("kind", "").startswith("confidential_lift")]
    finally:
        broker.close()


def test_a_confidential_purpose_is_absent_from_the_report_with_a_bare_statement(
        log: tuple[Path, Path], tmp_path: Path) -> None:
    found = report(log)
    assert SECRET not in purposes(found)
    assert "surveillance-woninginbraak" in purposes(found)  # the rest is there
    assert found["restriction"]["applies"] is True
    # Neither which purpose nor how many: nothing in the report names or counts them.
    text = json.dumps(found)
    assert SECRET not in text
    page = render_html(found, ZoneInfo("Europe/Amsterdam"))
    assert "Beperking" in page
    assert SECRET not in page
    # The statement is the same for a person with no restricted entry at all.
    stranger = report(log, "999999990")
    assert stranger["restriction"] == found["restriction"]


def test_verify_report_against_the_log_passes_for_a_restricted_report(
        log: tuple[Path, Path], tmp_path: Path) -> None:
    found = report(log)
    code, out = verified_against_log(log, found, tmp_path)
    assert code == 0, out
    # The re-derivation applies the rule the report states: without it, the left-out
    # entries are missing from the report.
    del found["restriction"]
    code, out = verified_against_log(log, found, tmp_path)
    assert code == 1
    assert "names the person, the report leaves it out" in out


def test_one_approver_is_not_enough_and_the_same_person_twice_is_refused(
        log: tuple[Path, Path]) -> None:
    code, _, err = lift(log, "approve", "A. de Vries")
    assert code == 2
    assert "no open proposal" in err
    assert lift(log, "propose", "A. de Vries")[0] == 0
    assert SECRET not in purposes(report(log))  # proposed is not lifted
    code, _, err = lift(log, "propose", "B. Jansen")
    assert code == 2
    assert "proposed this lift already" in err
    for same in ("A. de Vries", " a. DE VRIES "):
        code, _, err = lift(log, "approve", same)
        assert code == 2
        assert "four eyes" in err
    assert SECRET not in purposes(report(log))
    assert [e["detail"]["kind"] for e in lift_entries(log)] == ["confidential_lift_proposal"]


def test_the_lift_by_two_approvers_is_audited_and_the_entries_show(
        log: tuple[Path, Path], tmp_path: Path) -> None:
    before = report(log)
    assert lift(log, "propose", "A. de Vries")[0] == 0
    code, out, err = lift(log, "approve", "B. Jansen")
    assert code == 0, err
    assert "lifted by A. de Vries and B. Jansen" in out
    proposal, approval = lift_entries(log)
    assert proposal["detail"] == {"kind": "confidential_lift_proposal", "by": "A. de Vries"}
    assert approval["detail"] == {"kind": "confidential_lift",
                                  "approvers": "A. de Vries, B. Jansen"}
    assert (approval["purpose"], approval["covenant_version"]) == (SECRET, 1)
    after = report(log)
    assert SECRET in purposes(after)
    assert after["restriction"]["applies"] is False
    assert after["summary"]["disclosures"] > before["summary"]["disclosures"]
    code, out = verified_against_log(log, after, tmp_path)
    assert code == 0, out
    # The report made before the lift stays consistent: it states the lifts it applied.
    code, out = verified_against_log(log, before, tmp_path)
    assert code == 0, out
    code, _, err = lift(log, "propose", "C. Bakker")
    assert code == 2
    assert "lifted already" in err


def test_a_purpose_that_is_not_confidential_has_nothing_to_lift(
        log: tuple[Path, Path]) -> None:
    code, _, err = run(log, "policy", "lift", "propose", "--purpose",
                       "surveillance-woninginbraak", "--covenant-version", "1",
                       "--approver", "A. de Vries")
    assert code == 2
    assert "not confidential" in err


def test_the_fg_view_keeps_restricted_entries_marked_and_re_derives(
        log: tuple[Path, Path], tmp_path: Path) -> None:
    data, policy = log
    broker = Broker(settings_for(data, policy=policy))
    try:
        from broker.keys import keyed_pseudonym

        pseudonym = keyed_pseudonym(broker.keys.subject_key(), f"bsn:{VICTIM}")
        fg = audit_of(broker).subject_report(pseudonym, "bsn", AT, None,
                                             confidential.confidential_pairs(broker),
                                             reveal_restricted=True)
    finally:
        broker.close()
    marked = [item for section in ("disclosures", "withheld", "accesses", "other")
              for item in fg[section] if item.get("restricted")]
    assert marked
    assert {item["purpose"] for item in marked} == {SECRET}
    code, out = verified_against_log(log, fg, tmp_path)
    assert code == 0, out
    for item in marked:
        del item["restricted"]
    code, out = verified_against_log(log, fg, tmp_path)
    assert code == 1
    assert "does not mark it" in out


def test_the_four_eyes_rule_holds_in_the_use_case_too(log: tuple[Path, Path]) -> None:
    data, policy = log
    broker = Broker(settings_for(data, policy=policy))
    try:
        confidential.propose_lift(broker, SECRET, 1, "A. de Vries", NOW)
        with pytest.raises(PolicyError, match="four eyes"):
            confidential.approve_lift(broker, SECRET, 1, "a. de vries", NOW)
        with pytest.raises(PolicyError, match="names the person"):
            confidential.approve_lift(broker, SECRET, 1, "  ", NOW)
        assert confidential.approve_lift(broker, SECRET, 1, "B. Jansen", NOW) == \
            ("A. de Vries", "B. Jansen")
        assert confidential.lift_states(broker)[(SECRET, 1)].lifted
    finally:
        broker.close()


def test_the_loader_takes_only_a_real_boolean(tmp_path: Path) -> None:
    text = confidential_covenant(tmp_path).read_text(encoding="utf-8")
    assert parse_covenant(text, "c.yaml").purposes[SECRET].confidential is True
    with pytest.raises(CovenantError, match="confidential"):
        parse_covenant(text.replace("confidential: true", "confidential: 'yes'"), "c.yaml")


def test_the_fg_console_shows_restricted_entries_marked(log: tuple[Path, Path]) -> None:
    from fastapi.testclient import TestClient

    from broker.web.app import WebOptions, create_app
    from tests.unit.web_support import Clock, Web

    data, policy = log
    app = create_app(settings_for(data, policy=policy), WebOptions(clock=Clock(NOW)))
    with TestClient(app) as client:
        web = Web(app, client, Clock(NOW), data)
        csrf = web.login()
        page = client.post("/console/subject", data={"bsn": VICTIM, "csrf": csrf})
    assert page.status_code == 200, page.text
    assert "Er geldt een beperking" in page.text
    assert SECRET in page.text  # the FG sees which purpose
    assert '<span class="tag off">beperkt</span>' in page.text


def test_a_report_applying_fewer_lifts_than_it_covers_is_not_complete(
        log: tuple[Path, Path], tmp_path: Path) -> None:
    """A report may not hide lifted entries by claiming to apply only older lifts."""
    assert lift(log, "propose", "A. de Vries")[0] == 0
    assert lift(log, "approve", "B. Jansen")[0] == 0
    found = report(log)
    for section in ("disclosures", "withheld", "accesses", "other"):
        found[section] = [i for i in found[section] if i["purpose"] != SECRET]
    found["restriction"].update(applies=True, lifts_up_to=0)
    code, out = verified_against_log(log, found, tmp_path)
    assert code == 1
    assert "applies the lifts of the first 0 entries only" in out


_JSON = st.recursive(st.none() | st.booleans() | st.integers(-5, 10**6) | st.text(max_size=5),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=12), inner, max_size=3), max_leaves=6)


def test_any_restriction_statement_is_checked_never_crashes(log: tuple[Path, Path]) -> None:
    """verify-report reads a report an attacker may have made: whatever its restriction
    statement and restricted marks hold, the re-derivation answers (consistent or the
    first difference) and never fails with an exception."""
    from hypothesis import HealthCheck, given, settings

    from broker.audit.verify_derived import report_difference

    data, policy = log
    genuine = report(log)
    broker = Broker(settings_for(data, policy=policy))
    try:
        audit, pairs = audit_of(broker), confidential.confidential_pairs(broker)
        assert report_difference(audit.store, audit.schema, genuine, pairs) is None

        @given(restriction=_JSON | st.fixed_dictionaries(
                   {"lifts_up_to": _JSON, "revealed": _JSON, "applies": _JSON}),
               marks=st.lists(_JSON, max_size=4))
        @settings(max_examples=150, deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])
        def check(restriction: Any, marks: list[Any]) -> None:
            crafted = json.loads(json.dumps(genuine))
            crafted["restriction"] = restriction
            for item, mark in zip(crafted["disclosures"], marks, strict=False):
                item["restricted"] = mark
            found = report_difference(audit.store, audit.schema, crafted, pairs)
            assert found is None or isinstance(found, str)
            if not isinstance(restriction, dict) and restriction is not None:
                assert found is not None  # a statement that is not one is not accepted

        check()
    finally:
        broker.close()
