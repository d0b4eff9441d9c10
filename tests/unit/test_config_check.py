"""`covenant-broker config check`: effective settings (exit 0) or problems by key (exit 2)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from broker import cli
from broker.cli.config import SECRET, _masked, effective
from broker.config import load_settings
from broker.errors import ConfigError


def _check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main([*args, "config", "check"])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("COVENANT_BROKER_")]:
        monkeypatch.delenv(key)


def test_defaults_check_clean_and_print_every_effective_setting(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _check(capsys)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[:2] == ["config file: none (defaults)", "environment overrides: none"]
    assert "limits.max_string_bytes = 16384" in lines
    assert "limits.max_event_bytes = 262144" in lines
    assert 'backend = "embedded"' in lines
    assert any(line.startswith("policy = ") and "amstelveen.yaml" in line for line in lines)


def test_file_and_environment_overrides_show_in_the_effective_settings(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "broker.yaml"
    config.write_text("log_level: info\nlimits:\n  max_string_bytes: 4096\n"
                      "  max_event_bytes: 65536\n")
    monkeypatch.setenv("COVENANT_BROKER_LIMITS__MAX_STRING_BYTES", "1024")
    code, out, _ = _check(capsys, "--json", "--config", str(config))
    assert code == 0
    report = json.loads(out)
    assert report["ok"] is True
    assert report["config_file"] == str(config)
    assert report["environment"] == ["COVENANT_BROKER_LIMITS__MAX_STRING_BYTES"]
    assert report["settings"]["limits"] == {"max_string_bytes": 1024, "max_event_bytes": 65536}
    assert report["settings"]["log_level"] == "info"


@pytest.mark.parametrize(("text", "problems"), [
    ("limts:\n  max_string_bytes: 10\n", ["{file}:limts: Extra inputs are not permitted"]),
    ("limits:\n  max_string_bytes: -5\n  max_event_size: 9\n", [
        "{file}:limits.max_string_bytes: Input should be greater than 0",
        "{file}:limits.max_event_size: Extra inputs are not permitted"]),
    ("backend: postgres\n", ["{file}:backend: Input should be 'embedded' or 'kafka'"]),
    ("kafka:\n  partitions: many\n", [
        "{file}:kafka.partitions: Input should be a valid integer, unable to parse string as "
        "an integer"]),
    ("- a list\n", ["{file}: expected a mapping of settings"]),
    ("limits: {max_string_bytes: 1\n", [
        "{file}: not valid YAML at line 2 column 1: expected ',' or '}', but got '<stream end>'"]),
])
def test_unknown_keys_and_bad_values_in_the_file_are_refused_with_the_key(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
        problems: list[str]) -> None:
    config = tmp_path / "broker.yaml"
    config.write_text(text)
    code, out, err = _check(capsys, "--config", str(config))
    assert (code, out) == (2, "")
    assert err.splitlines() == [p.replace("{file}", str(config)) for p in problems]


def test_bad_environment_overrides_name_the_variable(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COVENANT_BROKER_DECIDE_BATCH_SIZE", "0")
    monkeypatch.setenv("COVENANT_BROKER_LOG_LEVL", "debug")
    code, out, _ = _check(capsys, "--json")
    assert code == 2
    assert json.loads(out) == {"ok": False, "problems": [
        "environment COVENANT_BROKER_DECIDE_BATCH_SIZE:decide_batch_size: Input should be "
        "greater than 0",
        "environment COVENANT_BROKER_LOG_LEVL:log_levl: Extra inputs are not permitted"]}


def test_a_section_and_one_of_its_keys_both_set_is_refused_not_a_crash(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COVENANT_BROKER_LIMITS", "5")
    monkeypatch.setenv("COVENANT_BROKER_LIMITS__MAX_STRING_BYTES", "100")
    code, _, err = _check(capsys)
    assert code == 2
    assert "COVENANT_BROKER_LIMITS" in err
    assert "set one or the other" in err


def test_paths_that_do_not_exist_are_problems_with_their_key(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("")
    config = tmp_path / "broker.yaml"
    config.write_text(f"schemas_dir: {tmp_path / 'nope'}\npolicy: {tmp_path / 'gone.yaml'}\n"
                      f"data_dir: {tmp_path / 'file'}\n")
    code, _, err = _check(capsys, "--config", str(config))
    assert code == 2
    assert err.splitlines() == [
        f"schemas_dir: {tmp_path / 'nope'}: not a directory",
        f"data_dir: {tmp_path / 'file'}: exists and is not a directory",
        f"policy: {tmp_path / 'gone.yaml'}: no such file"]


def test_an_unreadable_config_file_is_an_error(capsys: pytest.CaptureFixture[str],
                                               tmp_path: Path) -> None:
    code, _, err = _check(capsys, "--config", str(tmp_path / "missing.yaml"))
    assert code == 2
    assert err.strip() == f"{tmp_path / 'missing.yaml'}: cannot be read: No such file or directory"


def test_secrets_are_masked_by_type_and_by_key_name() -> None:
    values = effective(load_settings(environ={}))
    assert SECRET not in json.dumps(values)  # nothing secret among the defaults

    masked = _masked({"kafka": {"sasl_password": "hunter2", "ssl_keyfile_password": None,
                                "token": "abc", "user": "broker"}, "key": "**********"})
    assert masked == {"kafka": {"sasl_password": SECRET, "ssl_keyfile_password": None,
                                "token": SECRET, "user": "broker"}, "key": SECRET}


def test_a_bad_config_stops_every_other_command_with_the_same_key(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "broker.yaml"
    config.write_text("limits:\n  max_string_bytes: 0\n")
    assert cli.main(["--config", str(config), "audit", "verify"]) == 2
    assert f"{config}:limits.max_string_bytes: Input should be greater than 0" in \
        capsys.readouterr().err
    with pytest.raises(ConfigError):
        load_settings(config, environ={})
