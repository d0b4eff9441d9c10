"""Limits on record size and string field length: defaults, overrides, and their reasons."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from broker import cli
from broker.app.service import Broker
from broker.clock import parse_instant
from broker.config import load_settings
from broker.errors import ConfigError
from broker.model.json_input import Limits, convert
from tests import factories as f

NOW = parse_instant("2026-05-10T12:00:00Z")
DESCRIPTION = "persoon kijkt bij ramen naar binnen " * 6  # 216 bytes


def _ingest(broker: Broker, *events: dict[str, object]) -> list[tuple[str, str]]:
    report = broker.ingest("gemeente", "gemeente.boa_waarneming", f.lines(*events), NOW)
    return [(q.reason_code, q.reason) for q in report.quarantined]


def _broker(tmp_path: Path, environ: dict[str, str], config: Path | None = None) -> Broker:
    return Broker(load_settings(config, {"data_dir": tmp_path / "data"}, environ=environ))


def test_the_defaults_are_16_kib_per_string_and_256_kib_per_event(broker: Broker) -> None:
    assert broker.limits == Limits(16 * 1024, 256 * 1024)
    assert _ingest(broker, f.boa_waarneming(description="x" * 16 * 1024)) == []
    assert _ingest(broker, f.boa_waarneming(description="x" * (16 * 1024 + 1))) == [
        ("field_too_large", "description: 16385 bytes, the limit is 16384")]


def test_a_string_limit_set_in_the_environment_changes_the_outcome(tmp_path: Path) -> None:
    event = f.boa_waarneming(description=DESCRIPTION)
    default = _broker(tmp_path / "a", {})
    lowered = _broker(tmp_path / "b", {"COVENANT_BROKER_LIMITS__MAX_STRING_BYTES": "100"})
    try:
        assert _ingest(default, event) == []
        assert _ingest(lowered, event) == [
            ("field_too_large", "description: 216 bytes, the limit is 100")]
        # the same limit holds for Avro input
        schema = lowered.registry.get("gemeente.boa_waarneming")
        avro = schema.encode(convert(schema.raw, f.boa_waarneming(description=DESCRIPTION),
                                     Limits()).record)
        report = lowered.ingest("gemeente", "gemeente.boa_waarneming", [("avro", avro)], NOW)
        assert [(q.reason_code, q.reason) for q in report.quarantined] == [
            ("field_too_large", "description: 216 bytes, the limit is 100")]
    finally:
        default.close()
        lowered.close()


def test_an_event_limit_from_the_config_file_and_raised_by_the_environment(
        tmp_path: Path) -> None:
    config = tmp_path / "broker.yaml"
    config.write_text("limits:\n  max_event_bytes: 1000\n")
    event = f.boa_waarneming(description=DESCRIPTION * 4)
    size = len(json.dumps(event).encode())
    strict = _broker(tmp_path / "a", {}, config)
    raised = _broker(tmp_path / "b", {"COVENANT_BROKER_LIMITS__MAX_EVENT_BYTES": "4096"},
                     config)
    try:
        assert _ingest(strict, event) == [
            ("event_too_large", f"{size} bytes, the limit is 1000")]
        assert _ingest(raised, event) == []  # the environment overrides the file
    finally:
        strict.close()
        raised.close()


def test_a_record_over_the_default_event_limit_passes_once_the_limit_is_raised(
        make_broker: Callable[..., Broker]) -> None:
    goods = ["x" * 10_000] * 30  # every string within 16 KiB, the whole over 256 KiB
    event = f.woninginbraak(stolen_goods=goods)
    default = make_broker()
    report = default.ingest("politie", "politie.woninginbraak", f.lines(event), NOW)
    assert [q.reason_code for q in report.quarantined] == ["event_too_large"]
    default.close()
    raised = make_broker(limits={"max_event_bytes": 1024 * 1024})
    report = raised.ingest("politie", "politie.woninginbraak", f.lines(event), NOW)
    assert (report.accepted, report.quarantined) == (1, [])


def test_the_command_line_honours_an_environment_limit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COVENANT_BROKER_LIMITS__MAX_STRING_BYTES", "100")
    data = tmp_path / "in.jsonl"
    data.write_bytes(f.jsonl(f.boa_waarneming(description=DESCRIPTION), f.boa_waarneming()))
    assert cli.main(["--data-dir", str(tmp_path / "data"), "--now", "2026-05-10T12:00:00Z",
                     "--json", "ingest", "--source", "gemeente", "--type", "boa_waarneming",
                     str(data)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["accepted"] == 1
    assert out["quarantine"] == [{"position": "line 1", "reason_code": "field_too_large",
                                  "reason": "description: 216 bytes, the limit is 100"}]


@pytest.mark.parametrize(("environ", "problem"), [
    ({"COVENANT_BROKER_LIMITS__MAX_STRING_BYTES": "0"},
     "environment COVENANT_BROKER_LIMITS__MAX_STRING_BYTES:limits.max_string_bytes: "
     "Input should be greater than 0"),
    ({"COVENANT_BROKER_LIMITS__MAX_EVENT_BYTES": "256k"},
     "environment COVENANT_BROKER_LIMITS__MAX_EVENT_BYTES:limits.max_event_bytes: "
     "Input should be a valid integer, unable to parse string as an integer"),
    ({"COVENANT_BROKER_LIMITS__MAX_FIELDS": "10"},
     "environment COVENANT_BROKER_LIMITS__MAX_FIELDS:limits.max_fields: "
     "Extra inputs are not permitted"),
])
def test_bad_limits_are_refused_with_the_key(environ: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=environ)
    assert str(caught.value) == problem
