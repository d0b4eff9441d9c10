"""The FG console in a real browser: Debian's Chromium driven by Playwright.

`covenant-broker web` runs as a child process on a free 127.0.0.1 port over a data
directory seeded through Broker.ingest. The browser logs in as the FG, reads the covenant,
searches the audit log, opens a subject report, runs a full verification and a policy
impact, and takes a screenshot of each page. The test checks the subject report's
screenshot is a real PNG, that no URL the browser asked for and no server log line holds
the BSN, and that the recipient API answers over real HTTP next to the console.

Chromium comes from Debian (`deploy/web/chromium.py` installs it with apt-get when it is
missing); when it cannot be installed the test is skipped with a loud reason. Screenshots
go to a temporary folder; with UPDATE_SCREENSHOTS=1 also to docs/screenshots/ in the repo.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from broker.app.service import Broker
from broker.config import load_settings
from broker.web import auth
from broker.web.state import WebState
from tests import factories as f
from tests.unit.web_support import FG_NAME, FG_PASSWORD, NOW, RETURNEE_BSN

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "docs" / "screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--lang=nl-NL"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _chromium_helper() -> ModuleType:
    path = REPO / "deploy" / "web" / "chromium.py"
    spec = importlib.util.spec_from_file_location("covenant_chromium", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def chromium() -> Path:
    helper = _chromium_helper()
    try:
        return Path(helper.ensure_chromium())
    except helper.ChromiumUnavailableError as exc:
        reason = (f"!!! REAL-BROWSER TEST NOT RUN: Chromium cannot be installed here: {exc}. "
                  "Install Debian's `chromium` (or set CHROMIUM_PATH) to run it. !!!")
        warnings.warn(reason, stacklevel=1)
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _seed(data: Path) -> str:
    """A day of events, an FG account, a proposal, and a token for the case director."""
    broker = Broker(load_settings(overrides={"data_dir": data}, environ={}))
    try:
        broker.switch_theme("woninginbraak", True, NOW)
        broker.ingest("politie", "politie.woninginbraak", f.lines(
            f.woninginbraak(), f.woninginbraak(attempt=True, modus_operandi="flipperen"),
            f.woninginbraak(address={"wijk": "west", "street": "Bankrasweg"}),
            f.woninginbraak(address={"wijk": "oost", "street": "Startbaan"},
                            victim={"consent_prevention_advice": False})), NOW)
        broker.ingest("om", "om.gebiedsverbod", f.lines(f.gebiedsverbod()), NOW)
        broker.ingest("om", "om.detentie_uitstroom", f.lines(
            f.detentie_uitstroom(), f.detentie_uitstroom(municipality="Haarlem")), NOW)
        broker.ingest("gemeente", "gemeente.boa_waarneming", f.lines(f.boa_waarneming()), NOW)
    finally:
        broker.close()
    state = WebState(data)
    state.set_fg_user(FG_NAME, auth.hash_password(FG_PASSWORD), 0)
    current = (REPO / "policies" / "amstelveen.yaml").read_text(encoding="utf-8")
    proposed = current.replace("version: 1\n", "version: 2\n", 1).replace(
        "      bsn: {from: person.bsn}\n", "", 1).replace(
        "      street: {from: address.street}\n",
        "      street: {from: address.street}\n      house_number: {from: address.house_number}\n",
        1)
    (data / "proposals").mkdir()
    (data / "proposals" / "amstelveen-v2-zonder-bsn.yaml").write_text(proposed, "utf-8")
    return auth.create_token(state, "casusregisseur-dt", "browser test", 0).token


@dataclass
class Server:
    base: str
    token: str
    log: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("web")
    data = root / "data"
    token = _seed(data)
    log = root / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVENANT_BROKER_")}
    env["COVENANT_BROKER_LOG_LEVEL"] = "info"  # request lines too: they must hold no BSN
    for _ in range(3):  # a free port can be taken between probing and binding
        port = _free_port()
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "broker.cli", "--data-dir", str(data), "--now",
                 "2026-05-10T12:00:00Z", "web", "--listen", f"127.0.0.1:{port}"],
                cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if _get(base + "/openapi.json")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        if process.poll() is None:
            break
    else:
        pytest.fail(f"covenant-broker web did not start:\n{log.read_text()}", pytrace=False)
    try:
        yield Server(base, token, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def _shot(page: object, name: str, tmp: Path) -> Path:
    path = tmp / name
    page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        (SCREENSHOTS / name).write_bytes(path.read_bytes())
    return path


def test_the_recipient_api_answers_over_http(server: Server) -> None:
    auth_header = {"Authorization": f"Bearer {server.token}"}
    status, body = _get(server.base + "/v1/streams/nazorg-detentie-terugkeer/records",
                        auth_header)
    assert status == 200
    records = json.loads(body)["records"]
    assert [r["record"]["municipality"] for r in records] == ["Amstelveen"]
    assert _get(server.base + "/v1/streams")[0] == 401
    assert _get(server.base + "/v1/streams/informatie-politie/records", auth_header)[0] == 403


def test_fg_console_in_a_real_browser(server: Server, chromium: Path, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    _get(server.base + "/v1/streams/nazorg-detentie-terugkeer/records",
         {"Authorization": f"Bearer {server.token}"})  # an access for the subject report
    requested: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800}, locale="nl-NL")
            page.set_default_timeout(20_000)
            page.on("request", lambda r: requested.append(r.url))

            page.goto(server.base + "/console/")
            expect(page).to_have_url(server.base + "/console/login")
            _shot(page, "01-inloggen.png", tmp_path)
            page.get_by_label("Gebruikersnaam").fill(FG_NAME)
            page.get_by_label("Wachtwoord").fill(FG_PASSWORD)
            page.get_by_role("button", name="Inloggen").click()

            expect(page.get_by_role("heading", level=1)).to_contain_text("Convenant")
            expect(page.locator("#ontvanger-boa-hor-noord")).to_contain_text(
                "alleen de 4 cijfers van de postcode")
            _shot(page, "02-convenant.png", tmp_path)

            page.get_by_role("link", name="Auditlog").click()
            page.get_by_label("Ontvanger").select_option("casusregisseur-dt")
            page.get_by_role("button", name="Zoeken").click()
            expect(page.get_by_role("status")).to_contain_text("regels gevonden")
            rows = page.locator("table.audit tbody tr")
            assert rows.count() >= 2
            assert "recipient=casusregisseur-dt" in page.url
            _shot(page, "03-auditlog.png", tmp_path)

            page.get_by_role("link", name="Inzageverzoek").click()
            page.get_by_label("BSN (9 cijfers)").fill(RETURNEE_BSN)
            page.get_by_role("button", name="Overzicht opvragen").click()
            expect(page.get_by_role("heading", name="Verstrekt (1)", exact=True)).to_be_visible()
            expect(page.locator("body")).to_contain_text("nazorg-detentie-terugkeer")
            report = _shot(page, "04-inzageverzoek.png", tmp_path)
            assert page.content().count(RETURNEE_BSN) == 0

            page.get_by_role("link", name="Verificatie").click()
            page.get_by_role("button", name="Nu volledig controleren").click()
            expect(page.locator("body")).to_contain_text("intact")
            _shot(page, "05-verificatie.png", tmp_path)

            page.get_by_role("link", name="Beleidsimpact").click()
            page.get_by_label("Voorstel op de server").select_option(
                "proposals/amstelveen-v2-zonder-bsn.yaml")
            page.get_by_role("button", name="Impact berekenen").click()
            expect(page.get_by_role("status")).to_contain_text("opgeslagen meldingen")
            expect(page.locator("table")).to_contain_text("casusregisseur-dt")
            _shot(page, "06-beleidsimpact.png", tmp_path)
        finally:
            browser.close()

    data = report.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 10_000
    assert requested
    assert not [u for u in requested if RETURNEE_BSN in u]
    assert RETURNEE_BSN not in server.log.read_text(encoding="utf-8", errors="replace")
    assert "http request" in server.log.read_text(encoding="utf-8", errors="replace")
