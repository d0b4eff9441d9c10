"""`covenant-broker web ...`: tokens and FG accounts from the command line, --listen checks."""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker import cli, logs
from broker.cli.web import parse_listen
from broker.errors import InputError
from broker.web.auth import check_password, hash_token
from broker.web.state import WebState


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    logs.unconfigure()


def run(data: Path, *args: str) -> int:
    return cli.main(["--data-dir", str(data), "--now", "2026-05-10T12:00:00Z", *args])


def test_token_create_prints_the_token_once_and_keeps_only_its_hash(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(tmp_path, "web", "token", "create", "--recipient", "boa-hor-noord",
               "--label", "handheld noord") == 0
    out, err = capsys.readouterr()
    token = out.strip()
    assert token.startswith("cbt_")
    assert len(token) > 40
    assert "shown once" in err
    state = WebState(tmp_path)
    assert state.token_recipient(hash_token(token)) == "boa-hor-noord"
    assert token.encode() not in (tmp_path / "web.db").read_bytes()
    assert run(tmp_path, "web", "token", "list") == 0
    listed = capsys.readouterr().out
    assert "boa-hor-noord" in listed
    assert "handheld noord" in listed
    assert token not in listed


def test_token_json_output_and_revoke(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert run(tmp_path, "--json", "web", "token", "create", "--recipient", "preventie") == 0
    made = json.loads(capsys.readouterr().out)
    assert made["recipient"] == "preventie"
    assert run(tmp_path, "web", "token", "revoke", made["token_id"]) == 0
    assert WebState(tmp_path).token_recipient(hash_token(made["token"])) is None
    assert run(tmp_path, "web", "token", "revoke", made["token_id"]) == 2  # not active


def test_token_for_an_unknown_recipient_is_refused(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert run(tmp_path, "web", "token", "create", "--recipient", "nobody") == 2
    assert "unknown recipient 'nobody'" in capsys.readouterr().err
    assert WebState(tmp_path).tokens() == []


def test_fg_user_create_from_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough secret\n"))
    assert run(tmp_path, "web", "fg-user", "create", "fg-jansen", "--password-stdin") == 0
    assert "created" in capsys.readouterr().out
    stored = WebState(tmp_path).fg_password_hash("fg-jansen")
    assert check_password(stored, "a long enough secret")
    assert not check_password(stored, "a long enough secreT")
    with sqlite3.connect(tmp_path / "web.db") as db:
        rows = db.execute("SELECT * FROM fg_user").fetchall()
    assert "a long enough secret" not in repr(rows)


def test_fg_user_refuses_a_short_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert run(tmp_path, "web", "fg-user", "create", "fg", "--password-stdin") == 2
    assert "at least 12 characters" in capsys.readouterr().err


def test_fg_user_prompts_twice_and_refuses_a_mismatch(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter(["first password!!", "other password!!"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert run(tmp_path, "web", "fg-user", "create", "fg") == 2
    assert WebState(tmp_path).fg_password_hash("fg") is None


@pytest.mark.parametrize(("text", "expected"), [("127.0.0.1:8080", ("127.0.0.1", 8080)),
                                                ("[::1]:9000", ("::1", 9000)),
                                                ("localhost:0", ("localhost", 0))])
def test_listen_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["8080", ":8080", "host:", "host:http", "host:70000"])
def test_bad_listen_addresses_are_refused(text: str) -> None:
    with pytest.raises(InputError, match="HOST:PORT"):
        parse_listen(text)


def test_web_appears_in_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["web", "--help"])
    out = capsys.readouterr().out
    assert "--listen HOST:PORT" in out
    assert "token" in out
    assert "fg-user" in out
