"""Hostile YAML stays bounded (issue 15 item 3): aliases, anchors and size are refused.

A covenant or config file with nested anchors (an "alias bomb") is a few kilobytes that
expand to gigabytes once walked; the loader refuses it before building a node, with the
file and line, for `policy check`, for the config and for the console's impact upload.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from broker import cli
from broker.config import load_settings
from broker.config.yaml_file import MAX_YAML_BYTES, YamlFileError, parse_yaml
from broker.errors import ConfigError, CovenantError
from broker.policy.covenant import load_covenant
from tests.unit.strategies import POLICY_FILE
from tests.unit.web_support import Web, open_web

LEVELS, FAN = 9, 10  # 10**9 strings once expanded; about 1.4 KB as written


def bomb() -> str:
    lines = ["lol0: &a0 [" + ", ".join(['"lol"'] * FAN) + "]"]
    for level in range(1, LEVELS):
        lines.append(f"lol{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * FAN) + "]")
    return "\n".join(lines) + "\n"


def bomb_covenant(tmp_path: Path) -> Path:
    """The shipped covenant with the bomb hung under a free-text field (a description)."""
    text = POLICY_FILE.read_text(encoding="utf-8")
    indented = "".join(f"    {line}\n" for line in bomb().splitlines())
    path = tmp_path / "bomb.yaml"
    path.write_text(text + "bomb:\n" + indented, encoding="utf-8")
    return path


def test_policy_check_refuses_an_alias_bomb_with_file_and_line_in_a_second(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = bomb_covenant(tmp_path)
    anchor_line = next(n for n, line in enumerate(path.read_text().splitlines(), 1)
                       if "&a0" in line)
    started = time.monotonic()
    code = cli.main(["policy", "check", str(path)])
    assert time.monotonic() - started < 1.0
    out, err = capsys.readouterr()
    assert code == 1
    assert f"{path}:<yaml>: anchor &a0 is not allowed" in out + err
    assert "aliases are refused" in out + err
    assert f"(line {anchor_line})" in out + err


def test_an_alias_alone_is_refused_where_it_is_written(tmp_path: Path) -> None:
    path = tmp_path / "alias.yaml"
    # the anchor is refused first; an alias to an undefined anchor is refused as an alias
    path.write_text("covenant:\n  id: x\nparties: *nobody\n", encoding="utf-8")
    with pytest.raises(CovenantError) as caught:
        load_covenant(path)
    assert caught.value.problems == [
        f"{path}:<yaml>: alias *nobody is not allowed (YAML anchors and aliases are "
        "refused: write the value out) (line 3)"]


def test_a_merge_key_is_an_alias_and_refused() -> None:
    with pytest.raises(YamlFileError) as caught:
        parse_yaml("base: &b {a: 1}\nother:\n  <<: *b\n", "x.yaml")
    assert "not allowed" in caught.value.problem


def test_the_config_refuses_an_alias_bomb(tmp_path: Path) -> None:
    config = tmp_path / "broker.yaml"
    config.write_text("log_level: info\n" + bomb(), encoding="utf-8")
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={})
    assert time.monotonic() - started < 1.0
    assert str(caught.value) == (
        f"{config}: not valid YAML at line 2 column 7: anchor &a0 is not allowed (YAML "
        "anchors and aliases are refused: write the value out)")


def test_config_check_refuses_an_alias_bomb(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "broker.yaml"
    config.write_text(bomb(), encoding="utf-8")
    code = cli.main(["--config", str(config), "config", "check"])
    _, err = capsys.readouterr()
    assert code == 2
    assert f"{config}: not valid YAML at line 1" in err
    assert "not allowed" in err


def test_files_over_the_limit_are_refused_by_name(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("w", encoding="utf-8") as handle:  # valid YAML, just too much of it
        handle.write("covenant:\n  title: " + "x" * MAX_YAML_BYTES + "\n")
    with pytest.raises(CovenantError) as caught:
        load_covenant(big)
    assert caught.value.problems == [
        f"{big}:<file>: larger than the limit of {MAX_YAML_BYTES} bytes"]
    with pytest.raises(ConfigError) as config_error:
        load_settings(big, environ={})
    assert str(config_error.value) == f"{big}: larger than the limit of {MAX_YAML_BYTES} bytes"


def test_the_file_is_read_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never more than the limit plus one byte is read, whatever the file's size."""
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (MAX_YAML_BYTES * 4))
    sizes: list[int] = []
    real_open = Path.open

    def spy(self: Path, *args: object, **kwargs: object) -> object:
        handle = real_open(self, *args, **kwargs)  # type: ignore[call-overload]
        real_read = handle.read

        def read(n: int = -1) -> object:
            sizes.append(n)
            return real_read(n)
        handle.read = read
        return handle
    monkeypatch.setattr(Path, "open", spy)
    with pytest.raises(CovenantError):
        load_covenant(big)
    assert sizes == [MAX_YAML_BYTES + 1]


def test_a_config_key_written_twice_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "broker.yaml"
    config.write_text("limits:\n  max_event_bytes: 1000\n  max_event_bytes: 900000\n",
                      encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={})
    assert str(caught.value) == (f"{config}: not valid YAML at line 3 column 3: key "
                                 "'max_event_bytes' is written twice in one mapping")


plain = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6)
    | st.text(st.characters(categories=("L", "N")), max_size=8),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(st.characters(categories=("L",)), min_size=1, max_size=6),
                      inner, max_size=4),
    max_leaves=20)


@given(plain)
def test_yaml_without_anchors_loads_as_the_safe_loader_does(value: object) -> None:
    text = yaml.safe_dump(value)
    assert parse_yaml(text, "x.yaml")[1] == yaml.safe_load(text)


# -- the console's impact page ---------------------------------------------------------------

@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    yield from open_web(tmp_path / "data")


def test_the_impact_upload_of_an_alias_bomb_answers_an_error_quickly(
        web: Web, tmp_path: Path) -> None:
    csrf = web.login()
    started = time.monotonic()
    answer = web.client.post("/console/impact", data={"csrf": csrf}, files={
        "upload": ("bomb.yaml", bomb_covenant(tmp_path).read_bytes())})
    assert time.monotonic() - started < 2.0
    assert answer.status_code == 422
    assert "anchor &amp;a0 is not allowed" in answer.text
    assert "geüpload bestand" in answer.text
    # the server still answers
    assert web.client.get("/console/impact").status_code == 200


def test_an_impact_run_past_its_deadline_stops_with_an_error_page(
        web: Web, monkeypatch: pytest.MonkeyPatch) -> None:
    from broker.web import console
    monkeypatch.setattr(console, "IMPACT_RUN_SECONDS", -1.0)
    csrf = web.login()
    answer = web.client.post("/console/impact", data={"choice": "policies/amstelveen.yaml",
                                                      "csrf": csrf})
    assert answer.status_code == 422
    assert "the impact run stopped after 0 events" in answer.text
