"""The web faces on the Kafka backend: the same API contract over a real Apache Kafka.

Events go in through the CLI and `serve --until-idle` decides them; then the app (under
Starlette's TestClient) delivers a recipient's records, refuses another recipient's stream
with an audited 403, and every read is one `access` entry on the audit topic. The console
renders the covenant, and its audit search and verification pages read the integrated
audit log that `audit integrate` builds from the audit topic's chains.
"""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from broker.clock import parse_instant
from broker.web import auth
from broker.web.app import WebOptions, create_app
from tests import factories as f
from tests.integration.kafka_support import (
    jsonl,
    kafka_env,
    lines_file,
    run_cli,
    snapshot,
)
from tests.unit.web_support import FG_NAME, FG_PASSWORD

NOW = "2026-05-10T12:00:00Z"
RECORDS = "/v1/streams/surveillance-woninginbraak/records"


def test_recipient_api_and_console_on_kafka(kafka_bootstrap: str, tmp_path: Path) -> None:
    with kafka_env(kafka_bootstrap, tmp_path / "kafka", partitions=2) as env:
        env.broker().close()  # creates the topics
        feed = lines_file(tmp_path / "in.jsonl", jsonl([
            f.woninginbraak(), f.woninginbraak(), f.woninginbraak(address={"wijk": "west"})]))
        code, out = run_cli([*env.args(), "--now", NOW, "ingest", "--source", "politie",
                             "--type", "politie.woninginbraak", str(feed)])
        assert code == 0, out
        code, out = run_cli([*env.args(), "--json", "--now", NOW, "serve", "--until-idle"])
        assert code == 0, out
        assert json.loads(out.strip().splitlines()[-1])["stored"] == 3, out
        code, out = run_cli([*env.args(), "--json", "audit", "integrate"])
        assert code == 0, out
        integrated = json.loads(out)["size"]
        assert integrated > 3

        now = parse_instant(NOW)
        app = create_app(env.settings(), WebOptions(clock=lambda: now, poll_seconds=0.05))
        state = app.state.web_state
        token = auth.create_token(state, "boa-hor-noord", "kafka test", 0).token
        state.set_fg_user(FG_NAME, auth.hash_password(FG_PASSWORD), 0)
        headers = {"Authorization": f"Bearer {token}"}
        with TestClient(app) as client:
            streams = client.get("/v1/streams", headers=headers).json()["streams"]
            # Egress offsets on Kafka are Kafka offsets: transaction commit markers take
            # offsets too, so the two records need not sit at 0 and 1, and the next offset
            # is past the last marker. What holds on every backend: two records, in order.
            next_offset = {s["purpose"]: s["next_offset"] for s in streams}[
                "surveillance-woninginbraak"]
            everything = client.get(RECORDS, headers=headers).json()["records"]
            offsets = [r["offset"] for r in everything]
            assert len(offsets) == 2
            assert offsets == sorted(offsets)
            assert next_offset > offsets[-1]
            first = client.get(RECORDS, params={"limit": 1}, headers=headers).json()
            assert [r["offset"] for r in first["records"]] == offsets[:1]
            rest = client.get(RECORDS, params={"from_offset": offsets[0] + 1, "wait": 1},
                              headers=headers).json()
            assert [r["offset"] for r in rest["records"]] == offsets[1:]
            past = client.get(RECORDS, params={"from_offset": 7}, headers=headers)
            assert past.status_code == 200
            assert past.json()["records"] == []
            refused = client.get("/v1/streams/informatie-politie/records", headers=headers)
            assert refused.status_code == 403
            assert client.get(RECORDS).status_code == 401

            page = client.get("/console/login")
            csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
            client.post("/console/login", data={"username": FG_NAME, "password": FG_PASSWORD,
                                                "csrf": csrf})
            assert "surveillance-woninginbraak" in client.get("/console/").text
            # The audit pages read the integrated log (`audit integrate` ran above).
            search = client.get("/console/audit").text
            assert "geen doorzoekbaar auditlog" not in search
            assert f"{integrated} regels gevonden" in search
            verification = client.get("/console/verificatie").text
            assert "geen verifieerbaar auditlog" not in verification
            assert f"<dt>Regels</dt><dd>{integrated}</dd>" in verification
            csrf = verification.split('name="csrf" value="')[1].split('"')[0]
            client.post("/console/verificatie", data={"csrf": csrf})
            checked = client.get("/console/verificatie").text
            assert '<span class="tag on">intact</span>' in checked
            # The API reads above wrote access entries to Kafka after the integration.
            assert "Nog niet geïntegreerd" in checked

        accesses = [e for e in snapshot(env).entries("access")
                    if e["recipient"] == "boa-hor-noord"]
        reads = [e for e in accesses if e["decision"] is None]
        first_at, last_at = offsets
        assert [e["detail"].get("range") for e in reads] == [
            f"{first_at}-{last_at}", f"{first_at}-{first_at}", f"{last_at}-{last_at}", None]
        assert [e["purpose"] for e in accesses if e["decision"] == "refused"] == [
            "informatie-politie"]
