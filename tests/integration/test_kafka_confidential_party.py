"""Issue 13 items 6 and 4 on a real Apache Kafka: a confidential purpose and its four-eyes
lift, and the party read API.

The lift's proposal and approval are control events on the control topic with their audit
entries on the audit topic; a subject report reads the integrated log, so a lift counts
once `audit integrate` has taken it in. The party API reads the integrated log too, and its
`party_read` entries go to the audit topic like every other access.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from broker.clock import parse_instant
from broker.config import load_settings
from broker.web import auth
from broker.web.app import WebOptions, create_app
from tests import factories as f
from tests.integration.kafka_support import (
    KafkaEnv,
    jsonl,
    kafka_env,
    lines_file,
    run_cli,
    snapshot,
)
from tests.unit.test_confidential_purposes import SECRET, confidential_covenant

NOW = "2026-05-10T12:00:00Z"
VICTIM = "100000001"


def cli(env: KafkaEnv, policy: Path, *args: str) -> tuple[int, str]:
    return run_cli([*env.args(), "--policy", str(policy), "--now", NOW, *args])


def report(env: KafkaEnv, policy: Path) -> dict[str, Any]:
    code, out = cli(env, policy, "--json", "audit", "subject-report", "--bsn", VICTIM)
    assert code == 0, out
    found: dict[str, Any] = json.loads(out)
    return found


def purposes(found: dict[str, Any]) -> set[str]:
    return {item["purpose"] for section in ("disclosures", "withheld", "accesses", "other")
            for item in found[section] if item["purpose"]}


def test_a_lift_and_party_reads_on_kafka(kafka_bootstrap: str, tmp_path: Path) -> None:
    policy = confidential_covenant(tmp_path)
    with kafka_env(kafka_bootstrap, tmp_path / "kafka", partitions=2) as env:
        settings = load_settings(env.config, {"backend": "kafka", "data_dir": env.data_dir,
                                              "policy": policy}, environ={})
        feed = lines_file(tmp_path / "in.jsonl", jsonl([f.woninginbraak(
            victim={"bsn": VICTIM, "name": "Slachtoffer"}, suspect=None)]))
        code, out = cli(env, policy, "ingest", "--source", "politie", "--type",
                        "politie.woninginbraak", str(feed))
        assert code == 0, out
        code, out = cli(env, policy, "--json", "serve", "--until-idle")
        assert code == 0, out
        assert cli(env, policy, "consume", "--recipient", "preventie")[0] == 0
        assert cli(env, policy, "audit", "integrate")[0] == 0

        restricted = report(env, policy)
        assert SECRET not in purposes(restricted)
        assert restricted["restriction"]["applies"] is True

        lift = ("policy", "lift")
        target = ("--purpose", SECRET, "--covenant-version", "1")
        assert cli(env, policy, *lift, "propose", *target, "--approver", "A. de Vries")[0] == 0
        assert cli(env, policy, *lift, "approve", *target, "--approver", "A. de Vries")[0] == 2
        code, out = cli(env, policy, *lift, "approve", *target, "--approver", "B. Jansen")
        assert code == 0, out
        assert SECRET not in purposes(report(env, policy))  # not integrated: not yet counted
        assert cli(env, policy, "audit", "integrate")[0] == 0
        lifted = report(env, policy)
        assert SECRET in purposes(lifted)
        assert lifted["restriction"]["applies"] is False

        app = create_app(settings, WebOptions(clock=lambda: parse_instant(NOW)))
        state = app.state.web_state
        police = auth.create_party_token(state, "politie", "kafka", 0)
        om = auth.create_party_token(state, "om", "kafka", 0)
        path = f"/v1/party/purposes/{SECRET}/disclosures"
        with TestClient(app) as client:
            own = client.get(path, headers={"Authorization": f"Bearer {police.token}"})
            other = client.get(path, headers={"Authorization": f"Bearer {om.token}"})
        assert own.status_code == 200, own.text
        assert own.json()["entries"]
        assert {e["event_type"] for e in own.json()["entries"]} == {"politie.woninginbraak"}
        assert other.json()["entries"] == []

        kinds = [e["detail"]["kind"] for e in snapshot(env).entries("control")
                 if e["detail"].get("kind", "").startswith("confidential_lift")]
        assert kinds == ["confidential_lift_proposal", "confidential_lift"]
        reads = snapshot(env).entries("party_read")
        assert sorted(e["detail"]["token_id"] for e in reads) == sorted(
            [police.token_id, om.token_id])
