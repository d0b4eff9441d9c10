"""A bad key or checkpoint given to check the log against is "could not run" (exit 2, a
message naming the option), never a traceback and never "the log has problems" (exit 1).

Issue 15 item 9: `audit verify --public-key garbage` crashed with a critical traceback and
exit 1. Every option that takes a key or a checkpoint file is covered: `--public-key` and
`--origin` (with a PEM) on `audit verify`, `--trusted-checkpoint`, and the pinned key of the
offline checks `verify-proof`, `verify-consistency` and `verify-report`.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from broker import cli
from broker.audit.checkpoint import (
    VerifierKey,
    pinned_verifier_key,
    trusted_checkpoint_note,
    verifier_key_string,
)
from broker.errors import TrustAnchorError
from tests.unit.audit_support import build_log


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("trust") / "data"
    build_log(path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("inputs")
    private = Ed25519PrivateKey.generate()
    written = {
        "text": b"not a key at all\n",
        "pem": private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        "private": private.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()),
        "broken-pem": b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        "latin1": "caf\u00e9 BEGIN PUBLIC KEY \u00e9".encode(),
        "bundle": b"{}\n",
    }
    out = {}
    for name, raw in written.items():
        out[name] = folder / name
        out[name].write_bytes(raw)
    return out


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def assert_could_not_run(code: int, stderr: str, option: str) -> None:
    assert code == 2, stderr
    assert stderr.startswith("covenant-broker: error: "), stderr
    assert option in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize(("value", "extra", "option"), [
    ("garbage", [], "--public-key"),  # the reported crash
    ("a+b+c", [], "--public-key"),
    ("text", [], "--public-key"),  # a file that holds no key
    ("private", [], "--public-key"),  # the signing key by mistake: never echoed
    ("broken-pem", ["--origin", "log"], "--public-key"),
    ("latin1", ["--origin", "log"], "--public-key"),
    ("pem", ["--origin", "two words"], "--origin"),
])
def test_verify_with_a_bad_public_key_could_not_run(
        data: Path, files: dict[str, Path], value: str, extra: list[str], option: str) -> None:
    key = str(files[value]) if value in files else value
    code, stdout, stderr = run("--data-dir", str(data), "audit", "verify",
                               "--public-key", key, *extra)
    assert_could_not_run(code, stderr, option)
    assert stdout == ""
    assert "PRIVATE" not in stderr


def test_a_trusted_checkpoint_that_is_no_signed_note_could_not_run(
        data: Path, files: dict[str, Path]) -> None:
    code, _, stderr = run("--data-dir", str(data), "audit", "verify",
                          "--trusted-checkpoint", str(files["text"]))
    assert_could_not_run(code, stderr, f"--trusted-checkpoint {files['text']}")


def test_a_trusted_checkpoint_the_key_did_not_sign_stays_a_finding(
        data: Path, tmp_path: Path) -> None:
    """Only the form is an input check; a well-formed note the pinned key did not sign is
    what a replaced key looks like, so it must stay exit 1."""
    forged = tmp_path / "forged"
    forged.write_text("log\n1\n" + "A" * 43 + "=\n\n\u2014 log AAAAAAAA" + "A" * 88 + "\n",
                      encoding="utf-8")
    code, _, _ = run("--data-dir", str(data), "audit", "verify",
                     "--trusted-checkpoint", str(forged))
    assert code == 1


@pytest.mark.parametrize("command", ["verify-proof", "verify-consistency", "verify-report"])
@pytest.mark.parametrize(("value", "extra", "option"), [
    ("garbage", [], "--public-key"),
    ("pem", [], "--origin"),  # a PEM names no key: --origin is needed
    ("pem", ["--origin", "two words"], "--origin"),
    ("latin1", ["--origin", "log"], "--public-key"),
])
def test_offline_checks_with_a_bad_public_key_could_not_run(
        tmp_path: Path, files: dict[str, Path], command: str, value: str, extra: list[str],
        option: str) -> None:
    key = str(files[value]) if value in files else value
    code, _, stderr = run("--data-dir", str(tmp_path / "data"), "audit", command,
                          str(files["bundle"]), "--public-key", key, *extra)
    assert_could_not_run(code, stderr, option)


def test_a_good_pem_and_origin_pin_the_same_key_as_the_vkey(files: dict[str, Path]) -> None:
    pinned = pinned_verifier_key(str(files["pem"]), "log")
    assert pinned_verifier_key(verifier_key_string("log", pinned.public_key), None) == pinned


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200), st.one_of(st.none(), st.text(max_size=20)))
def test_any_public_key_text_pins_a_key_or_is_refused_by_name(
        value: str, origin: str | None) -> None:
    """What an auditor (or whoever hands them a key) types can only pin a key or be
    refused with TrustAnchorError; no other exception reaches the command line."""
    refused = ""
    try:
        key = pinned_verifier_key(value, origin)
    except TrustAnchorError as exc:
        refused = str(exc)
    else:
        assert isinstance(key, VerifierKey)
    assert not refused or refused.startswith(("--public-key", "--origin"))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_trusted_checkpoint_text_is_a_note_or_refused_by_name(note: str) -> None:
    refused = ""
    try:
        assert trusted_checkpoint_note(note, "--trusted-checkpoint F") == note
    except TrustAnchorError as exc:
        refused = str(exc)
    assert not refused or refused.startswith("--trusted-checkpoint F: ")
