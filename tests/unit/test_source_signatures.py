"""Optional Ed25519 source signatures: verified at ingest, bad input quarantined and audited."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.app.service import Broker
from broker.cli import main
from broker.clock import parse_instant
from broker.errors import ConfigError, InvalidEvent
from broker.pipeline.ingest import split_lines
from broker.pipeline.signatures import (
    SourceKeys,
    decode_signature,
    keygen,
    load_private_key,
    read_signature_file,
    sign,
    write_signature_file,
)
from tests import factories as f

NOW = "2026-05-10T12:00:00Z"
TYPES = ["politie.woninginbraak", "om.gebiedsverbod", "gemeente.boa_waarneming"]
POLITIE, OM = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
KEYS = SourceKeys({"politie": POLITIE.public_key(), "om": OM.public_key()}, TYPES)
VALUE = json.dumps(f.woninginbraak()).encode()
TYPE = "politie.woninginbraak"


def code_of(source: str, event_type: str, value: bytes, sig: bytes | None) -> str | None:
    try:
        KEYS.check(source, event_type, value, sig)
    except InvalidEvent as bad:
        return bad.code
    return None


def test_a_valid_signature_passes_raw_or_base64() -> None:
    sig = sign(POLITIE, TYPE, VALUE)
    assert code_of("politie", TYPE, VALUE, sig) is None
    assert code_of("politie", TYPE, VALUE, base64.b64encode(sig)) is None
    assert code_of("politie", TYPE, VALUE, base64.b64encode(sig).rstrip(b"=")) is None


def test_a_keyed_source_must_sign() -> None:
    assert code_of("politie", TYPE, VALUE, None) == "signature_missing"
    assert code_of("politie", TYPE, VALUE, b"not a signature") == "signature_invalid"
    # a source without a key is not checked
    assert code_of("gemeente", "gemeente.boa_waarneming", VALUE, None) is None
    assert code_of("gemeente", "gemeente.boa_waarneming", VALUE, b"junk") is None


def test_another_sources_signature_is_the_wrong_source() -> None:
    # om signs an event for politie's type: the producing principal is not the source
    assert code_of("politie", TYPE, VALUE, sign(OM, TYPE, VALUE)) == "wrong_source"
    # politie's signed record replayed onto om's topic
    assert code_of("om", "om.gebiedsverbod", VALUE, sign(POLITIE, TYPE, VALUE)) == \
        "wrong_source"
    # ... or onto a source that has no key of its own
    assert code_of("gemeente", "gemeente.boa_waarneming", VALUE,
                   sign(POLITIE, TYPE, VALUE)) == "wrong_source"


def test_a_signature_for_another_type_of_the_same_source_is_invalid() -> None:
    sig = sign(POLITIE, "politie.other", VALUE)
    keys = SourceKeys({"politie": POLITIE.public_key()}, [TYPE, "politie.other"])
    with pytest.raises(InvalidEvent) as caught:
        keys.check("politie", TYPE, VALUE, sig)
    assert caught.value.code == "signature_invalid"
    assert "politie.other" in caught.value.reason


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_bit_flip_in_value_or_signature_is_rejected(data: st.DataObject) -> None:
    value = data.draw(st.binary(min_size=1, max_size=512))
    sig = sign(POLITIE, TYPE, value)
    in_value = data.draw(st.booleans())
    target = bytearray(value if in_value else sig)
    bit = data.draw(st.integers(0, len(target) * 8 - 1))
    target[bit // 8] ^= 1 << (bit % 8)
    flipped_value, flipped_sig = (bytes(target), sig) if in_value else (value, bytes(target))
    assert code_of("politie", TYPE, flipped_value, flipped_sig) == "signature_invalid"
    assert code_of("politie", TYPE, value, sig) is None


@given(st.binary(max_size=100))
def test_decode_signature_never_raises(raw: bytes) -> None:
    decoded = decode_signature(raw)
    assert decoded is None or len(decoded) == 64


# -- configured on a broker ------------------------------------------------------------------

@pytest.fixture
def politie_key(tmp_path: Path) -> tuple[Path, Path]:
    return keygen(tmp_path / "keys" / "politie")


def test_keygen_writes_a_private_key_only_the_owner_reads(politie_key: tuple[Path, Path]
                                                          ) -> None:
    private, public = politie_key
    assert private.stat().st_mode & 0o777 == 0o600
    assert b"PUBLIC KEY" in public.read_bytes()
    with pytest.raises(Exception, match="exists"):
        keygen(private.with_suffix(""))


def test_config_names_covenant_sources_and_ed25519_keys(
        make_broker: Callable[..., Broker], politie_key: tuple[Path, Path],
        tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"sources\.politei: not a source"):
        make_broker(sources={"politei": {"public_key": str(politie_key[1])}})
    ec = tmp_path / "ec.pub"
    ec.write_bytes(generate_private_key(SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(ConfigError, match="not an Ed25519 public key"):
        make_broker(sources={"politie": {"public_key": str(ec)}})
    with pytest.raises(ConfigError, match="cannot be read"):
        make_broker(sources={"politie": {"public_key": str(tmp_path / "none.pub")}})


def test_embedded_ingest_quarantines_unsigned_and_forged_input(
        make_broker: Callable[..., Broker], politie_key: tuple[Path, Path],
        tmp_path: Path) -> None:
    private, public = politie_key
    om = tmp_path / "om.pub"
    om.write_bytes(OM.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    broker = make_broker(sources={"politie": {"public_key": str(public)},
                                  "om": {"public_key": str(om)}})
    key = load_private_key(private)
    good, unsigned, forged = (json.dumps(f.woninginbraak()).encode() for _ in range(3))
    report = broker.ingest("politie", TYPE, [("line 1", good), ("line 2", unsigned),
                                             ("line 3", forged)],
                           parse_instant(NOW), {"line 1": sign(key, TYPE, good),
                                                "line 3": sign(OM, TYPE, forged)})
    assert report.accepted == 1
    assert [(q.position, q.reason_code) for q in report.quarantined] == [
        ("line 2", "signature_missing"), ("line 3", "wrong_source")]
    schema = broker.registry.get("records.audit_entry")
    entries = [schema.decode(d) for _, d in broker.log.audit_rows()]
    codes = sorted(e["reason_code"] for e in entries if e["name"] == "quarantine")
    assert codes == ["signature_missing", "wrong_source"]
    assert broker.verify_audit().ok


def test_ingest_settled_takes_signatures_by_line_number(
        make_broker: Callable[..., Broker], politie_key: tuple[Path, Path]) -> None:
    # Broker.ingest_settled numbers its lines as the CLI and the Kafka ingress do; each
    # signature must reach the line of its number
    private, public = politie_key
    broker = make_broker(sources={"politie": {"public_key": str(public)}})
    key = load_private_key(private)
    first, second, third = (json.dumps(f.woninginbraak()).encode() for _ in range(3))
    report = broker.ingest_settled("politie", TYPE, [(1, first), (2, second), (3, third)],
                                   parse_instant(NOW), {1: sign(key, TYPE, first),
                                                        3: sign(key, TYPE, second)})
    assert report.accepted == 1
    assert [(q.position, q.reason_code) for q in report.quarantined] == [
        ("line 2", "signature_missing"), ("line 3", "signature_invalid")]


def test_cli_sign_then_ingest(tmp_path: Path, politie_key: tuple[Path, Path],
                              capsys: pytest.CaptureFixture[str]) -> None:
    private, public = politie_key
    config = tmp_path / "config.yaml"
    config.write_text(f"sources:\n  politie:\n    public_key: {public}\n")
    events = tmp_path / "in.jsonl"
    events.write_text(json.dumps(f.woninginbraak()) + "\n\n" +
                      json.dumps(f.woninginbraak()) + "\n")
    base = ["--data-dir", str(tmp_path / "data"), "--now", NOW, "--config", str(config),
            "--json"]
    assert main([*base, "source", "sign", "--key", str(private), "--type", TYPE,
                 str(events)]) == 0
    assert json.loads(capsys.readouterr().out)["signatures"] == 2
    sigs = events.with_name("in.jsonl.sig")
    assert sigs.read_bytes().count(b"\n") == 3  # line 2 is blank in both
    # tamper with the last event after signing
    text = events.read_text().splitlines()
    text[2] = text[2].replace("Amstelveen", "Amsterdam")
    events.write_text("\n".join(text) + "\n")
    assert main([*base, "ingest", "--source", "politie", "--type", "woninginbraak",
                 "--signatures", str(sigs), str(events)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["accepted"] == 1
    assert [q["reason_code"] for q in out["quarantine"]] == ["signature_invalid"]
    # without the signature file nothing of politie's gets in
    assert main([*base, "ingest", "--source", "politie", "--type", "woninginbraak",
                 str(events)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["accepted"] == 0
    assert {q["reason_code"] for q in out["quarantine"]} == {"signature_missing"}


def test_config_check_lists_the_keys_and_refuses_a_missing_one(
        tmp_path: Path, politie_key: tuple[Path, Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"sources:\n  politie:\n    public_key: {politie_key[1]}\n")
    assert main(["config", "check", "--config", str(config)]) == 0
    assert f'sources.politie.public_key = "{politie_key[1]}"' in capsys.readouterr().out
    config.write_text(f"sources:\n  politie:\n    public_key: {tmp_path / 'gone.pub'}\n")
    assert main(["config", "check", "--config", str(config)]) == 2
    assert "sources.politie.public_key" in capsys.readouterr().err


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from([VALUE, b"", b"  ", b"not json", b"\xff"]), max_size=6),
       st.booleans())
def test_the_signature_file_writer_and_reader_agree_line_by_line(
        tmp_path_factory: pytest.TempPathFactory, lines: list[bytes], newline: bool) -> None:
    """Writer and reader live side by side in pipeline/signatures.py: every line ingest
    reads gets the signature of exactly that line, blank lines none."""
    data = b"\n".join(lines) + (b"\n" if newline and lines else b"")
    out = tmp_path_factory.mktemp("sig") / "in.jsonl.sig"
    written = write_signature_file(POLITIE, TYPE, data, out)
    signatures = read_signature_file(out)
    inputs = dict(split_lines(data))
    assert written == len(inputs)
    assert set(signatures) == set(inputs)
    for number, value in inputs.items():
        KEYS.check("politie", TYPE, value, signatures[number])
