"""`schemas list|show` and the topic names of `config check` on Kafka (issue 12, items 3, 4)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fastavro.schema import fingerprint as fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from broker import cli
from broker.model.schemas import SchemaRegistry

REPO = Path(__file__).resolve().parents[2]
REGISTRY = SchemaRegistry(REPO / "schemas")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("COVENANT_BROKER_")]:
        monkeypatch.delenv(key)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_schemas_list_holds_every_schema_with_fastavros_fingerprint(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "--json", "schemas", "list")
    assert code == 0
    listed = json.loads(out)["schemas"]
    current = {e["name"]: e for e in listed if e["version"] == "current"}
    assert set(current) == set(REGISTRY.by_name)
    for entry in listed:
        schema = REGISTRY.by_fingerprint.get(bytes.fromhex(entry["fingerprint"])) or \
            REGISTRY.history[bytes.fromhex(entry["fingerprint"])]
        assert entry["fingerprint"] == fastavro_fingerprint(
            to_parsing_canonical_form(schema.raw), "CRC-64-AVRO")
    assert len(listed) == len(REGISTRY.by_name) + len(REGISTRY.history)
    assert current["politie.woninginbraak"]["used"][0] == \
        "ingress type politie.woninginbraak (source politie)"
    assert "view of preventie for preventie-woninginbraak" in \
        current["views.preventie_woninginbraak"]["used"]


def test_schemas_show_prints_the_writer_schema_by_name_or_fingerprint(
        capsys: pytest.CaptureFixture[str]) -> None:
    view = REGISTRY.get("views.preventie_woninginbraak")
    _, by_name, _ = _run(capsys, "schemas", "show", view.name)
    _, by_fp, _ = _run(capsys, "schemas", "show", view.fingerprint.hex().upper())
    assert json.loads(by_name) == json.loads(by_fp) == view.raw
    _, canonical, _ = _run(capsys, "schemas", "show", view.name, "--canonical")
    assert canonical.strip() == to_parsing_canonical_form(view.raw)


def test_schemas_show_of_an_unknown_schema_exits_2_pointing_at_the_list(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "schemas", "show", "ffffffffffffffff")
    assert code == 2
    assert "schemas list" in err


def test_config_check_on_kafka_prints_the_topic_names(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "--backend", "kafka", "--bootstrap-servers", "127.0.0.1:1",
                        "--json", "config", "check")
    assert code == 0
    topics = json.loads(out)["topics"]
    assert "covenant.ingress.politie.woninginbraak" in topics
    assert "covenant.egress.preventie.preventie-woninginbraak" in topics
    assert {"covenant.store", "covenant.audit", "covenant.keys"} <= set(topics)
    code, text, _ = _run(capsys, "--backend", "kafka", "--bootstrap-servers", "127.0.0.1:1",
                         "config", "check")
    assert code == 0
    assert "kafka topics (" in text
    assert "  covenant.quarantine" in text.splitlines()


def test_config_check_on_the_embedded_backend_names_no_topics(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "--json", "config", "check")
    assert code == 0
    assert "topics" not in json.loads(out)
