"""`kafka init` (issue 12, item 3): every topic created and checked, the layout printed,
and a source that produces before the first `serve` loses nothing."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import fastavro
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from broker.model.json_input import Limits, convert
from broker.model.schemas import SchemaRegistry
from tests import factories as f
from tests.integration.kafka_support import check_exactly_once, kafka_env, run_cli, snapshot

NOW = "2026-05-10T12:00:00Z"
REPO = Path(__file__).resolve().parents[2]
REGISTRY = SchemaRegistry(REPO / "schemas")


def _init(args: list[str]) -> tuple[int, dict[str, Any]]:
    code, out = run_cli([*args, "--json", "kafka", "init"])
    return code, json.loads(out)


def test_kafka_init_creates_every_topic_prints_the_layout_and_is_idempotent(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    with kafka_env(kafka_bootstrap, tmp_path, partitions=2) as env:
        code, first = _init(env.args())
        again_code, again = _init(env.args())
        text_code, text = run_cli([*env.args(), "kafka", "init"])
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        try:
            existing = {t for t in admin.list_topics() if t.startswith(f"{env.name}.")}
        finally:
            admin.close()

    p = f"{env.name}."
    rows = {row["topic"]: row for row in first["topics"]}
    assert (code, first["ok"], first["problems"]) == (0, True, [])
    assert sorted(first["created"]) == sorted(rows) == sorted(existing)
    assert (again_code, again["created"], again["topics"]) == (0, [], first["topics"])
    assert text_code == 0
    assert f"{len(rows)} topics on {kafka_bootstrap}: 0 created" in text

    ingress = rows[f"{p}ingress.politie.woninginbraak"]
    burglary = REGISTRY.get("politie.woninginbraak")
    assert (ingress["partitions"], ingress["schema"], ingress["fingerprint"]) == (
        2, "politie.woninginbraak", burglary.fingerprint.hex())
    assert ingress["key"].startswith("event_id")
    assert ingress["writers"] == ["User:covenant-broker", "User:politie"]
    assert ingress["readers"] == ["User:covenant-broker"]
    egress = rows[f"{p}egress.boa-hor-noord.surveillance-woninginbraak"]
    view = REGISTRY.get("views.surveillance_woninginbraak")
    assert (egress["partitions"], egress["schema"], egress["fingerprint"]) == (
        1, view.name, view.fingerprint.hex())
    assert egress["writers"] == ["User:covenant-broker"]
    assert egress["readers"] == ["User:boa-hor-noord", "User:covenant-broker"]
    assert rows[f"{p}audit"]["schema"] == "records.audit_batch"
    assert rows[f"{p}store"]["readers"] == ["User:covenant-broker"]  # sealed: broker only


def test_a_topic_with_other_settings_is_reported_with_what_differs_exit_1(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    with kafka_env(kafka_bootstrap, tmp_path, partitions=2) as env:
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        try:
            admin.create_topics([NewTopic(f"{env.name}.store", 1, 1,
                                          topic_configs={"cleanup.policy": "compact"})])
        finally:
            admin.close()
        code, report = _init(env.args())
        text_code, text = run_cli([*env.args(), "kafka", "init"])

    assert code == text_code == 1
    assert report["ok"] is False
    store = [p for p in report["problems"] if f"{env.name}.store " in p]
    assert any("has 1 partitions, the config needs 2" in p for p in store), store
    assert any("cleanup.policy is compact, the design needs delete" in p for p in store), store
    assert f"{env.name}.audit" in report["created"]  # the missing ones were still created
    assert f"DIFFERS: topic {env.name}.store" in text


def _single_object(schema_json: dict[str, Any], fingerprint: str,
                   record: dict[str, Any]) -> bytes:
    """What a source writes with fastavro and nothing of the broker's: C3 01, the
    fingerprint `schemas list` prints, the Avro body."""
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema_json), record)
    return b"\xc3\x01" + bytes.fromhex(fingerprint) + buf.getvalue()


def test_a_source_producing_avro_and_json_before_the_first_serve_loses_nothing(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    with kafka_env(kafka_bootstrap, tmp_path, partitions=3) as env:
        code, layout = _init(env.args())
        assert code == 0, layout
        assert not env.data_dir.exists()  # nothing of serve's ran yet
        _, shown = run_cli([*env.args(), "--json", "schemas", "show", "om.gebiedsverbod"])
        ban = json.loads(shown)
        burglaries = [f.woninginbraak() for _ in range(12)]
        bans = [f.gebiedsverbod() for _ in range(6)]
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        try:
            for event in burglaries[:10]:  # JSON, keyed by event_id as docs/integrators.md says
                producer.send(f"{env.name}.ingress.politie.woninginbraak",
                              json.dumps(event).encode(), key=event["event_id"].encode())
            for event in burglaries[10:]:  # no key: serve forwards it to its partition
                producer.send(f"{env.name}.ingress.politie.woninginbraak",
                              json.dumps(event).encode())
            schema = REGISTRY.get("om.gebiedsverbod")
            for event in bans:  # Avro single-object encoding
                record = convert(schema.raw, event, Limits()).record
                producer.send(f"{env.name}.ingress.om.gebiedsverbod",
                              _single_object(ban["schema"], ban["fingerprint"], record),
                              key=event["event_id"].encode())
            producer.flush(timeout=60)
        finally:
            producer.close()
        code, out = run_cli([*env.args(), "--json", "--now", NOW, "serve", "--until-idle"])
        assert code == 0, out
        report = json.loads(out.strip().splitlines()[-1])
        result = check_exactly_once(snapshot(env))
        decided = {e["event_id"] for e in snapshot(env).entries("decide")}

    produced = {e["event_id"].lower() for e in burglaries + bans}
    assert (report["stored"], report["quarantined"]) == (len(produced), 0), report
    assert report["forwarded"] <= 2
    assert decided == produced  # every event decided, none lost
    assert result.quarantined == 0
    # every burglary goes to the wijk's boa, preventie and slachtoffer-preventieadvies
    assert {r[0] for r in result.releases} >= {e["event_id"].lower() for e in burglaries}
    assert sum(1 for r in result.releases if r[2] != "handhaving-gebiedsverbod") == \
        3 * len(burglaries)
