"""The AVG art. 30 register of the covenant in force: `covenant-broker register` as JSON,
CSV and one self-contained HTML page, and the FG console's register page (issue 13 item 2).

The expected facts are read from the sample covenant file itself, so a test asserts that
the register says what the parties signed, not what the renderer happens to print."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from broker.policy.covenant import parse_covenant
from broker.policy.register import CSV_COLUMNS, build_register, render_html
from tests.unit.strategies import POLICY_FILE
from tests.unit.web_support import Web, open_web

REPO = Path(__file__).resolve().parents[2]
SIGNED = yaml.safe_load(POLICY_FILE.read_text(encoding="utf-8"))
SHA = hashlib.sha256(POLICY_FILE.read_bytes()).hexdigest()


def cli(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVENANT_BROKER_")}
    return subprocess.run([sys.executable, "-m", "broker.cli", "--data-dir", str(data),
                           "--now", "2026-05-10T12:00:00Z", "register", *args],
                          capture_output=True, text=True, check=False, cwd=REPO, env=env,
                          timeout=60)


def test_register_json_is_the_signed_covenants_register(tmp_path: Path) -> None:
    done = cli(tmp_path / "data")
    assert done.returncode == 0, done.stderr
    register = json.loads(done.stdout)
    assert register["format"] == "covenant-broker/avg-art30-register/v1"
    assert register["covenant"] == {
        "id": "amstelveen-veiligheid", "version": 1,
        "title": "Convenant informatie-uitwisseling veiligheid Amstelveen",
        "signed_on": "2020-04-29", "valid_from": "2020-04-29", "valid_until": "2026-12-31",
        "sha256": SHA}
    by_purpose = {a["purpose"]: a for a in register["activities"]}
    assert list(by_purpose) == list(SIGNED["purposes"])
    for name, signed in SIGNED["purposes"].items():
        activity = by_purpose[name]
        assert activity["processing_activity_id"] == signed["processing_activity_id"]
        assert [c["party"] for c in activity["controllers"]] == signed["controllers"]
        assert activity["joint_controllers"] is (len(signed["controllers"]) > 1)
        assert activity["legal_basis"] == signed["legal_basis"]
        assert activity["retention_days"] == signed["retention_days"]
        assert activity["data_subject_categories"] == signed["data_subject_categories"]
        assert activity["personal_data_categories"] == signed["personal_data_categories"]
        assert activity["security_measures"] == [*SIGNED["security_measures"],
                                                 *signed.get("security_measures", [])]
        assert [r["recipient"] for r in activity["recipients"]] == \
            [r for rule in signed["recipients"] for r in rule["to"]]
        for controller in activity["controllers"]:
            party = SIGNED["parties"][controller["party"]]
            assert controller["name"] == party["name"]
            assert controller["fg"] == party["fg"]  # the FG's contact, art. 30(1)(a)
    nazorg = by_purpose["nazorg-detentie-terugkeer"]
    assert nazorg["recipients"] == [{
        "recipient": "casusregisseur-dt", "party": "gemeente", "party_name":
        "Gemeente Amstelveen", "description":
        "Casusregisseur Detentie en Terugkeer voor de Amstelland-gemeenten"}]
    assert "BSN" in nazorg["personal_data_categories"]
    assert nazorg["third_country_transfers"] == []
    assert by_purpose["handhaving-gebiedsverbod"]["retention"] == \
        "365 dagen na verstrekking, of eerder: vervalt na het veld valid_until"


def test_register_csv_has_one_row_per_activity(tmp_path: Path) -> None:
    out = tmp_path / "register.csv"
    done = cli(tmp_path / "data", "--format", "csv", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert f"written to {out}" in done.stdout
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert rows
    assert list(rows[0]) == CSV_COLUMNS
    assert [r["purpose"] for r in rows] == list(SIGNED["purposes"])
    slachtoffer = next(r for r in rows if r["purpose"] == "slachtoffer-preventieadvies")
    assert slachtoffer["processing_activity_id"] == \
        SIGNED["purposes"]["slachtoffer-preventieadvies"]["processing_activity_id"]
    assert slachtoffer["joint_controllers"] == "ja"
    assert slachtoffer["controllers"] == ("politie (Politie Eenheid Amsterdam, district "
                                          "Amstelland); gemeente (Gemeente Amstelveen)")
    assert "fg@politie.example" in slachtoffer["fg_contacts"]
    assert "fg@amstelveen.example" in slachtoffer["fg_contacts"]
    assert slachtoffer["personal_data_categories"] == \
        "naam; telefoonnummer; e-mailadres; adres; modus operandi; datum"
    assert slachtoffer["recipients"] == "preventie (gemeente)"
    assert slachtoffer["third_country_transfers"] == "geen"
    assert slachtoffer["retention_days"] == "90"
    assert (slachtoffer["covenant_id"], slachtoffer["covenant_version"]) == \
        ("amstelveen-veiligheid", "1")


def test_register_html_is_one_self_contained_page(tmp_path: Path) -> None:
    done = cli(tmp_path / "data", "--format", "html")
    assert done.returncode == 0, done.stderr
    page = done.stdout
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page
    assert "<link" not in page
    assert " src=" not in page
    assert "Register van verwerkingsactiviteiten (AVG art. 30)" in page
    for name, signed in SIGNED["purposes"].items():
        assert f'<h2 id="{name}">' in page
        assert signed["processing_activity_id"] in page
    assert "Gezamenlijk verwerkingsverantwoordelijken" in page
    assert "Functionaris gegevensbescherming OM (fg@om.example)" in page
    assert SHA in page


def test_register_html_escapes_what_the_covenant_says() -> None:
    text = POLICY_FILE.read_text(encoding="utf-8").replace(
        "description: Preventieadvies aan slachtoffers die daarvoor toestemming gaven.",
        "description: Advies <script>alert(1)</script> & meer")
    page = render_html(build_register(parse_covenant(text, "edited.yaml"), "0" * 64))
    assert "<script>" not in page
    assert "Advies &lt;script&gt;alert(1)&lt;/script&gt; &amp; meer" in page


# -- the FG console -----------------------------------------------------------------------------

@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    yield from open_web(tmp_path / "data")


def test_the_console_register_needs_a_login(web: Web) -> None:
    answer = web.client.get("/console/register", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/login"


def test_the_console_shows_the_register_on_a_page_of_its_own(web: Web) -> None:
    web.login()
    answer = web.client.get("/console/register")
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-store"
    page = answer.text
    assert '<a href="/console/register" aria-current="page">Register</a>' in page
    for name, signed in SIGNED["purposes"].items():
        assert f'id="activiteit-{name}"' in page
        assert signed["processing_activity_id"] in page
    assert "Functionaris gegevensbescherming gemeente Amstelveen" in page
    assert "fg@om.example" in page
    assert "gedetineerden die terugkeren naar een Amstelland-gemeente" in page
    assert SHA in page
    # and every other page links to it
    assert '<a href="/console/register">Register</a>' in web.client.get("/console/").text
