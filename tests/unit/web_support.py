"""Shared pieces of the web tests: an app on a seeded data directory, tokens, an FG login.

The app runs in-process under Starlette's TestClient (no server, no port). Time is a
movable clock, so tests can step past an area ban's end and see its tombstones.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from broker.app.service import Broker
from broker.audit.store import QueryFilter
from broker.clock import parse_instant
from broker.config import load_settings
from broker.web import auth
from broker.web.app import WebOptions, create_app
from tests import factories as f

NOW = parse_instant("2026-05-10T12:00:00Z")
FG_NAME, FG_PASSWORD = "fg-amstelveen", "correct horse battery staple"
VICTIM_BSN = "111222333"  # the factories' victim; also in detentie_uitstroom below
RETURNEE_BSN = "123123123"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def seed(broker: Broker, now: datetime) -> None:
    """Three burglaries (two in noord), an area ban for noord/oost, a returnee."""
    broker.ingest("politie", "politie.woninginbraak", f.lines(
        f.woninginbraak(), f.woninginbraak(attempt=True),
        f.woninginbraak(address={"wijk": "west"})), now)
    broker.ingest("om", "om.gebiedsverbod", f.lines(f.gebiedsverbod()), now)
    broker.ingest("om", "om.detentie_uitstroom", f.lines(f.detentie_uitstroom()), now)


@dataclass
class Web:
    app: FastAPI
    client: TestClient
    clock: Clock
    data_dir: Path

    def run(self, fn: Callable[[Broker], Any]) -> Any:
        """Run on the app's own broker thread (its SQLite handles live there)."""
        return self.app.state.worker.run(fn)

    def token(self, recipient: str) -> dict[str, str]:
        made = auth.create_token(self.app.state.web_state, recipient, "test", 0)
        return {"Authorization": f"Bearer {made.token}"}

    def audit(self, **where: Any) -> list[dict[str, Any]]:
        return self.run(lambda b: list(b.audit.query(QueryFilter(**where))))

    def add_fg_user(self) -> None:
        self.app.state.web_state.set_fg_user(FG_NAME, auth.hash_password(FG_PASSWORD), 0)

    def csrf(self, path: str = "/console/login") -> str:
        page = self.client.get(path)
        found = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert found, f"no CSRF field on {path}"
        return found.group(1)

    def login(self) -> str:
        """Log in as the FG; returns the session's CSRF token for later forms."""
        self.add_fg_user()
        done = self.client.post("/console/login", data={
            "username": FG_NAME, "password": FG_PASSWORD, "csrf": self.csrf()})
        assert done.status_code == 200, done.text
        assert str(done.url).endswith("/console/")
        return self.csrf("/console/")


def open_web(data_dir: Path, **options: Any) -> Iterator[Web]:
    clock = Clock(NOW)
    settings = load_settings(overrides={"data_dir": data_dir}, environ={})
    app = create_app(settings, WebOptions(clock=clock, poll_seconds=0.02, **options))
    app.state.worker.run(lambda b: seed(b, NOW))
    with TestClient(app) as client:
        yield Web(app, client, clock, data_dir)
