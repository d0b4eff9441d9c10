"""The FG console: login and CSRF, the covenant overview, audit search, subject report,
verification and policy impact; and that a BSN never reaches a URL, a log line or storage."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker import logs
from broker.app.service import Broker
from broker.config import Settings
from broker.keys import keyed_pseudonym
from tests.unit.web_support import (
    FG_NAME,
    FG_PASSWORD,
    RETURNEE_BSN,
    VICTIM_BSN,
    Web,
    open_web,
)

PAGES = ["/console/", "/console/audit", "/console/subject", "/console/verificatie",
         "/console/impact"]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    yield from open_web(tmp_path / "data")


def alerts(html: str) -> list[str]:
    return re.findall(r'role="alert">([^<]+)<', html)


# -- login --------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", PAGES)
def test_pages_need_a_login(web: Web, path: str) -> None:
    answer = web.client.get(path, follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/login"


def test_login_page_is_dutch_and_has_a_csrf_field(web: Web) -> None:
    page = web.client.get("/console/login")
    assert page.status_code == 200
    assert '<html lang="nl">' in page.text
    assert "Gebruikersnaam" in page.text
    assert "Wachtwoord" in page.text
    assert web.csrf()


@pytest.mark.parametrize(("user", "password"), [(FG_NAME, "wrong password!!"),
                                                ("nobody", FG_PASSWORD)])
def test_a_failed_login_says_the_same_for_a_wrong_password_and_an_unknown_user(
        web: Web, user: str, password: str) -> None:
    web.add_fg_user()
    answer = web.client.post("/console/login", data={"username": user, "password": password,
                                                     "csrf": web.csrf()})
    assert answer.status_code == 401
    assert alerts(answer.text) == ["Onjuiste gebruikersnaam of wachtwoord."]
    assert web.client.get("/console/", follow_redirects=False).status_code == 303


def test_login_without_the_csrf_token_is_refused(web: Web) -> None:
    web.add_fg_user()
    web.csrf()
    answer = web.client.post("/console/login", data={"username": FG_NAME,
                                                     "password": FG_PASSWORD,
                                                     "csrf": "forged"})
    assert answer.status_code == 400
    assert web.client.get("/console/", follow_redirects=False).status_code == 303


def test_login_then_logout(web: Web) -> None:
    csrf = web.login()
    assert web.client.get("/console/").status_code == 200
    cookie = web.client.cookies.get("cb_console")
    assert cookie
    web.client.post("/console/logout", data={"csrf": csrf})
    assert web.client.get("/console/", follow_redirects=False).status_code == 303


def test_the_session_cookie_is_strict_and_http_only(web: Web) -> None:
    web.add_fg_user()
    answer = web.client.post("/console/login", data={
        "username": FG_NAME, "password": FG_PASSWORD, "csrf": web.csrf()},
        follow_redirects=False)
    cookie = answer.headers["set-cookie"].lower()
    assert "samesite=strict" in cookie
    assert "httponly" in cookie


def test_fg_passwords_are_stored_as_scrypt_hashes(web: Web) -> None:
    web.add_fg_user()
    with sqlite3.connect(web.data_dir / "web.db") as db:
        (stored,) = db.execute("SELECT password_hash FROM fg_user").fetchone()
    assert stored.startswith("scrypt$")
    assert FG_PASSWORD not in stored


# -- the covenant -------------------------------------------------------------------------------

def test_overview_shows_parties_purposes_bases_and_fields_per_recipient(web: Web) -> None:
    web.login()
    page = web.client.get("/console/").text
    for text in ["Politie Eenheid Amsterdam, district Amstelland", "Openbaar Ministerie",
                 "Gemeente Amstelveen", "surveillance-woninginbraak",
                 "Wpg art. 20 jo. het convenant", "AVG art. 6 lid 1 sub a",
                 "28 dagen", "alleen de 4 cijfers van de postcode", "afgerond op het uur",
                 "schuilnaam (sleutel per doel", "casusregisseur-dt",
                 "alleen zolang het thema &#39;woninginbraak&#39; aan staat",
                 "victim.bsn", "Per ontvanger"]:
        assert text in page, text
    recipient = page.split('id="ontvanger-boa-hor-noord"')[1].split("</details>")[0]
    assert "surveillance-woninginbraak" in recipient
    assert "handhaving-gebiedsverbod" in recipient
    assert "nazorg-detentie-terugkeer" not in recipient


# -- audit search -------------------------------------------------------------------------------

def test_audit_search_filters_by_recipient_and_decision(web: Web) -> None:
    web.login()
    page = web.client.get("/console/audit", params={"recipient": "boa-hor-west",
                                                    "decision": "release"}).text
    rows = re.findall(r"<tr>\s*<td class=\"num\">(\d+)</td>", page)
    expected = web.audit(recipient="boa-hor-west", decision="release")
    assert sorted(int(r) for r in rows) == sorted(e["seq"] for e in expected)
    assert "1 regels gevonden" in page


def test_audit_search_pages_newest_first(web: Web) -> None:
    web.login()
    total = len(web.audit())
    assert total > 25
    first = web.client.get("/console/audit").text
    seqs = [int(r) for r in re.findall(r"<tr>\s*<td class=\"num\">(\d+)</td>", first)]
    assert seqs == sorted(seqs, reverse=True)
    assert len(seqs) == 25
    assert 'rel="next"' in first
    second = web.client.get("/console/audit", params={"page": 2}).text
    more = [int(r) for r in re.findall(r"<tr>\s*<td class=\"num\">(\d+)</td>", second)]
    assert more
    # each search is an audit entry itself: the log grew by one between the two pages
    assert max(more) == min(seqs)


def test_audit_search_by_time_range_and_action(web: Web) -> None:
    web.login()
    web.client.get("/v1/streams/preventie-woninginbraak/records",
                   headers=web.token("preventie"))
    page = web.client.get("/console/audit", params={
        "action": "access", "since": "2026-05-10T13:00", "until": "2026-05-10T15:00"}).text
    assert "1 regels gevonden" in page  # 12:00Z is 14:00 in Amsterdam
    assert "regels 0-2" in page  # the three burglaries
    none = web.client.get("/console/audit", params={"action": "access",
                                                    "since": "2026-05-10T15:00"}).text
    assert "0 regels gevonden" in none


@pytest.mark.parametrize("params", [{"since": "gisteren"}, {"until": "2026-13-45T99:99"},
                                    {"page": "-3"}, {"page": "abc"}, {"page": "99999999"},
                                    {"recipient": "x" * 500}])
def test_audit_search_survives_bad_input(web: Web, params: dict[str, str]) -> None:
    web.login()
    answer = web.client.get("/console/audit", params=params)
    assert answer.status_code == 200


# -- subject report -----------------------------------------------------------------------------

def test_subject_report_shows_disclosures_and_never_the_bsn(
        web: Web, capfd: pytest.CaptureFixture[str]) -> None:
    csrf = web.login()
    logs.configure("debug", "json")
    try:
        answer = web.client.post("/console/subject", data={"bsn": RETURNEE_BSN,
                                                           "csrf": csrf})
    finally:
        logs.unconfigure()
    assert answer.status_code == 200
    page = answer.text
    assert RETURNEE_BSN not in page
    assert RETURNEE_BSN not in str(answer.url)
    assert "nazorg-detentie-terugkeer" in page
    assert "casusregisseur-dt" in page
    assert re.search(r"<strong>1</strong> verstrekt", page)
    out, err = capfd.readouterr()
    assert RETURNEE_BSN not in out + err
    assert any(json.loads(line).get("event") == "http request"
               for line in err.splitlines() if line.startswith("{"))


def test_subject_report_lookup_is_audited_by_pseudonym(web: Web) -> None:
    csrf = web.login()
    web.client.post("/console/subject", data={"bsn": VICTIM_BSN, "csrf": csrf})
    pseudonym = web.run(lambda b: keyed_pseudonym(b.keys.subject_key(), f"bsn:{VICTIM_BSN}"))
    lookups = web.audit(name="subject_report")
    assert len(lookups) == 1
    assert lookups[0]["data_subjects"] == [{"pseudonym": pseudonym, "id_type": "bsn",
                                            "role": "lookup"}]
    assert lookups[0]["detail"]["by"] == FG_NAME
    assert VICTIM_BSN not in json.dumps(lookups)


def test_the_bsn_is_stored_nowhere_in_the_web_state(web: Web) -> None:
    csrf = web.login()
    web.client.post("/console/subject", data={"bsn": "999888777", "csrf": csrf})
    for path in web.data_dir.rglob("*"):
        if path.is_file():
            assert b"999888777" not in path.read_bytes(), path


def test_subject_report_accepts_the_bsn_only_by_post(web: Web) -> None:
    web.login()
    answer = web.client.get("/console/subject", params={"bsn": VICTIM_BSN})
    assert "<h2>Overzicht</h2>" not in answer.text
    assert web.audit(name="subject_report") == []


@pytest.mark.parametrize("bsn", ["12345", "abcdefghi", "1234567890", "", "12345678 9"])
def test_subject_report_refuses_what_is_not_a_bsn(web: Web, bsn: str) -> None:
    csrf = web.login()
    answer = web.client.post("/console/subject", data={"bsn": bsn, "csrf": csrf})
    assert answer.status_code == 422
    assert alerts(answer.text) == ["Een BSN bestaat uit 9 cijfers."]


def test_subject_report_needs_the_csrf_token(web: Web) -> None:
    web.login()
    answer = web.client.post("/console/subject", data={"bsn": VICTIM_BSN, "csrf": "x"})
    assert answer.status_code == 400
    assert web.audit(name="subject_report") == []


# -- verification -------------------------------------------------------------------------------

def test_verification_shows_the_checkpoint_and_runs_a_full_verify(web: Web) -> None:
    csrf = web.login()
    web.run(lambda b: b.log.audit.checkpoint(only_if_appended=False))
    page = web.client.get("/console/verificatie").text
    assert "Laatste ondertekende controlepunt" in page
    assert "ondertekend</span> over" in page
    assert "nog geen volledige controle" in page
    done = web.client.post("/console/verificatie", data={"csrf": csrf})
    assert done.status_code == 200
    assert "intact</span>" in done.text
    assert f"door {FG_NAME}" in done.text


# -- policy impact ------------------------------------------------------------------------------

def test_impact_of_the_current_file_is_no_difference(web: Web) -> None:
    csrf = web.login()
    form = web.client.get("/console/impact").text
    assert "policies/amstelveen.yaml" in form
    answer = web.client.post("/console/impact", data={"choice": "policies/amstelveen.yaml",
                                                      "csrf": csrf})
    assert answer.status_code == 200
    assert "geen verschil" in answer.text


def test_impact_of_an_uploaded_proposal_shows_what_changes(web: Web) -> None:
    csrf = web.login()
    text = (REPO / "policies" / "amstelveen.yaml").read_text(encoding="utf-8")
    proposed = text.replace("      modus_operandi: keep\n      date: {from: occurred_until, "
                            "transform: day}\n", "      date: {from: occurred_until, "
                            "transform: day}\n", 1)
    proposed = proposed.replace("version: 1\n", "version: 2\n", 1)
    assert proposed != text
    answer = web.client.post("/console/impact", data={"csrf": csrf},
                             files={"upload": ("voorstel.yaml", proposed.encode())})
    assert answer.status_code == 200, alerts(answer.text)
    table = answer.text.split("<tbody>")[-1]
    assert "slachtoffer-preventieadvies" in table
    assert "modus_operandi" in table


def test_impact_reports_problems_in_an_upload(web: Web) -> None:
    csrf = web.login()
    answer = web.client.post("/console/impact", data={"csrf": csrf},
                             files={"upload": ("x.yaml", b"covenant: [1, 2\n")})
    assert answer.status_code == 422
    assert alerts(answer.text)
    assert str(web.data_dir) not in answer.text


def test_impact_refuses_a_path_that_is_not_on_the_list(web: Web) -> None:
    csrf = web.login()
    answer = web.client.post("/console/impact", data={"choice": "/etc/passwd", "csrf": csrf})
    assert answer.status_code == 422
    assert alerts(answer.text) == ["Kies een bestand of upload er een."]


# -- every page ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders_with_its_menu_marked(web: Web, path: str) -> None:
    web.login()
    answer = web.client.get(path)
    assert answer.status_code == 200
    assert 'aria-current="page"' in answer.text
    assert answer.headers["cache-control"] == "no-store"
    assert "Uitloggen" in answer.text


def test_the_stylesheet_is_served(web: Web) -> None:
    answer = web.client.get("/static/console.css")
    assert answer.status_code == 200
    assert "--blue" in answer.text


def test_root_redirects_to_the_console(web: Web) -> None:
    answer = web.client.get("/", follow_redirects=False)
    assert answer.headers["location"] == "/console/"


def test_pages_say_so_on_a_backend_without_an_audit_store(tmp_path: Path) -> None:
    """The Kafka backend has no queryable audit store yet: the console says so, no 500."""

    def without_audit(settings: Settings) -> Broker:
        broker = Broker(settings)
        broker.audit = None
        return broker

    for web in open_web(tmp_path / "data", broker_factory=without_audit):
        csrf = web.login()
        assert "geen doorzoekbaar auditlog" in web.client.get("/console/audit").text
        assert "geen verifieerbaar auditlog" in web.client.get("/console/verificatie").text
        report = web.client.post("/console/subject", data={"bsn": VICTIM_BSN, "csrf": csrf})
        assert "geen doorzoekbaar auditlog" in report.text
        done = web.client.post("/console/verificatie", data={"csrf": csrf})
        assert done.status_code == 200
        assert web.client.get("/console/").status_code == 200


def test_repeated_failed_logins_are_throttled_then_allowed_again(web: Web) -> None:
    web.add_fg_user()

    def attempt(password: str) -> Any:
        return web.client.post("/console/login", data={
            "username": FG_NAME, "password": password, "csrf": web.csrf()})

    for _ in range(5):
        assert attempt("wrong").status_code == 401
    locked = attempt(FG_PASSWORD)  # even the right password waits now
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) == 15 * 60
    assert alerts(locked.text) == ["Te veel mislukte pogingen. Probeer het over 15 minuten "
                                   "opnieuw."]
    assert web.client.get("/console/", follow_redirects=False).status_code == 303
    web.clock.advance(minutes=14, seconds=30)
    assert attempt(FG_PASSWORD).status_code == 429
    web.clock.advance(seconds=31)  # the first failure left the 15-minute window
    done = attempt(FG_PASSWORD)
    assert done.status_code == 200
    assert str(done.url).endswith("/console/")


def _with_cookie(web: Web, cookie: str) -> int:
    """The status of the overview for a client that presents `cookie` (a copied one)."""
    web.client.cookies.clear()
    web.client.cookies.set("cb_console", cookie)
    return web.client.get("/console/", follow_redirects=False).status_code


def test_a_copied_session_cookie_is_worthless_once_the_session_ended(web: Web) -> None:
    csrf = web.login()
    copied = web.client.cookies.get("cb_console")
    assert copied
    assert web.client.post("/console/logout", data={"csrf": csrf}).status_code == 200
    assert _with_cookie(web, copied) == 303  # a signed cookie alone no longer logs in

    web.client.cookies.clear()
    web.login()
    copied = web.client.cookies.get("cb_console")
    assert copied
    assert _with_cookie(web, copied) == 200
    web.add_fg_user()  # a new password (the same text here) ends the account's sessions
    assert _with_cookie(web, copied) == 303

    web.client.cookies.clear()
    web.login()
    copied = web.client.cookies.get("cb_console")
    assert copied
    web.clock.advance(hours=7, minutes=59)
    assert _with_cookie(web, copied) == 200
    web.clock.advance(minutes=2)  # past the 8-hour lifetime, whatever the cookie says
    assert _with_cookie(web, copied) == 303


def test_verification_without_a_pinned_key_warns_that_it_proves_little(web: Web) -> None:
    web.login()
    page = web.client.get("/console/verificatie").text
    assert "Geen sleutel vastgepind" in page
    assert "--pinned-key" in page


def test_verification_checks_against_the_key_the_fg_pinned(tmp_path: Path) -> None:
    """Issue 15 finding 10: a data dir whose signing key was replaced and whose log was
    re-signed verifies against its own key; against the key the FG pinned it does not.
    Here the pin is another signer's key (the log was signed by a key the FG never saw)."""
    from broker.audit.checkpoint import parse_verifier_key
    from tests.unit.audit_support import other_signer

    origin = "covenant-broker/amstelveen-veiligheid"
    foreign = parse_verifier_key(other_signer(origin).verifier_key())
    for pin, intact in ((foreign, False), (None, True)):
        data = tmp_path / ("foreign" if pin else "own")
        for web in open_web(data, pinned_key=pin):
            own = parse_verifier_key(web.run(lambda b: b.audit.verifier_key()))
            csrf = web.login()
            web.run(lambda b: b.log.audit.checkpoint(only_if_appended=False))
            done = web.client.post("/console/verificatie", data={"csrf": csrf}).text
            assert ('class="tag on">intact</span>' in done) is intact
            assert ("NIET intact</span>" in done) is not intact
            assert ("vastgepind</span>" in done) is (pin is not None)
            if pin is None:  # the same log, pinned to its real key: intact, and says so
                break
        assert own.public_key != foreign.public_key
