"""Proof bundles: written by `audit prove` / `audit consistency`, checked offline.

The offline checks get only the bundle and the pinned key: no data directory, no store.
A bundle for another entry, another log, another key, or with any part edited is refused
with a message naming the part, and `verify-proof` / `verify-consistency` exit 1.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from broker import cli
from broker.audit.bundles import (
    BundleError,
    ProofUnavailableError,
    verify_consistency_bundle,
    verify_inclusion_bundle,
)
from broker.audit.checkpoint import Checkpoint, parse_verifier_key
from broker.model.schemas import SchemaRegistry
from tests.unit.audit_support import NOW, audit_of, build_log, open_broker, other_signer

ORIGIN = "covenant-broker/amstelveen-veiligheid"
SCHEMA = SchemaRegistry(Path(__file__).resolve().parents[2] / "schemas").get(
    "records.audit_entry")


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bundles") / "data"
    build_log(path)
    return path


@pytest.fixture(scope="module")
def key(log: Path) -> str:
    with open_broker(log) as broker:
        return audit_of(broker).verifier_key()


def run(*args: str | Path, data: Path | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    argv = (["--data-dir", str(data)] if data else []) + [str(a) for a in args]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def prove(log: Path, entry: int) -> dict[str, Any]:
    with open_broker(log) as broker:
        return audit_of(broker).prove(entry)


def consistency(log: Path, old: int, new: int | None) -> dict[str, Any]:
    with open_broker(log) as broker:
        return audit_of(broker).consistency(old, new)


def check(bundle: Any, key: str) -> None:
    verify_inclusion_bundle(bundle, parse_verifier_key(key), ORIGIN, SCHEMA)


def test_prove_then_verify_proof_offline(log: Path, key: str, tmp_path: Path) -> None:
    out = tmp_path / "proof.json"
    code, text, _ = run("audit", "prove", "--entry", "5", "--out", out, data=log)
    assert code == 0, text
    bundle = json.loads(out.read_text())
    assert bundle["log_index"] == 5
    assert bundle["tree_size"] == 39
    assert bundle["entry"]["seq"] == 5
    assert bundle["entry"]["recipient"] == "preventie"
    assert bundle["checkpoint"].startswith(f"{ORIGIN}\n39\n")
    # offline: no --data-dir; the key is given as text
    code, text, _ = run("audit", "verify-proof", out, "--public-key", key)
    assert code == 0, text
    assert text.startswith("proof valid: entry 5 (decide, release, preventie)")


def test_every_entry_proves_and_verifies(log: Path, key: str) -> None:
    for index in range(39):
        check(prove(log, index), key)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda b, o: b.update(log_index=b["log_index"] + 1),
     "entry 6 is not proven in the signed tree of size 39"),
    (lambda b, o: b.update(entry_base64=o["entry_base64"]),
     "entry 5 is not proven in the signed tree of size 39"),
    (lambda b, o: b.update(entry_base64=o["entry_base64"], log_index=6,
                           inclusion_proof=o["inclusion_proof"]),
     "entry 6: the decoded entry in the bundle differs from the proven bytes"),
    (lambda b, o: b.update(inclusion_proof=b["inclusion_proof"][:-1]),
     "inclusion proof too short"),
    (lambda b, o: b.update(inclusion_proof=[*b["inclusion_proof"], b["inclusion_proof"][0]]),
     "inclusion proof too long"),
    (lambda b, o: b.update(inclusion_proof=[]), "inclusion proof too short"),
    (lambda b, o: b["entry"].update(recipient="boa-hor-zuid"),
     "the decoded entry in the bundle differs from the proven bytes"),
    (lambda b, o: b.update(tree_size=38), "tree_size 38 is not the signed checkpoint's size 39"),
    (lambda b, o: b.update(origin="covenant-broker/elders"),
     "bundle names origin 'covenant-broker/elders'"),
    (lambda b, o: b.update(checkpoint=b["checkpoint"].replace("\n39\n", "\n38\n")),
     "checkpoint: bad signature"),
    (lambda b, o: b.update(inclusion_proof=["not base64!"]), "is not valid base64"),
    (lambda b, o: b.update(inclusion_proof=[base64.b64encode(b"short").decode()]),
     "is 5 bytes, a hash is 32"),
    (lambda b, o: b.update(extra=1), "unknown fields: extra"),
    (lambda b, o: b.pop("checkpoint"), "bundle has no field 'checkpoint'"),
    (lambda b, o: b.update(format="x"), "not an inclusion proof bundle"),
])
def test_an_edited_inclusion_bundle_is_refused(log: Path, key: str, edit: Any,
                                               message: str) -> None:
    bundle, other = prove(log, 5), prove(log, 6)
    tampered = copy.deepcopy(bundle)
    edit(tampered, other)
    with pytest.raises(BundleError, match=re.escape(message)):
        check(tampered, key)


def test_a_proof_for_another_entry_does_not_prove_this_one(log: Path, key: str) -> None:
    five, six = prove(log, 5), prove(log, 6)
    swapped = dict(five, inclusion_proof=six["inclusion_proof"])
    with pytest.raises(BundleError, match="entry 5 is not proven"):
        check(swapped, key)


def test_the_root_must_come_from_a_signed_checkpoint(log: Path, key: str) -> None:
    # A checkpoint signed by another key over the root the proof needs is not enough.
    bundle = prove(log, 5)
    forged_note = other_signer(ORIGIN).sign(Checkpoint(ORIGIN, 39, b"\x00" * 32))
    with pytest.raises(BundleError, match=f"checkpoint: no signature by key {ORIGIN}"):
        check(dict(bundle, checkpoint=forged_note), key)


def test_the_wrong_public_key_is_refused_on_the_cli(log: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    out.write_text(json.dumps(prove(log, 3)))
    code, text, _ = run("audit", "verify-proof", out, "--public-key",
                        other_signer(ORIGIN).verifier_key())
    assert code == 1
    assert text.startswith(f"proof NOT valid: checkpoint: no signature by key {ORIGIN}")
    code, _, err = run("audit", "verify-proof", out, "--public-key", "nonsense")
    assert code == 2
    assert "--public-key" in err


def test_prove_refuses_entries_that_do_not_exist(log: Path) -> None:
    with pytest.raises(ProofUnavailableError, match=r"entry 39 does not exist; the log has "
                       r"39 entries \(0..38\)"):
        prove(log, 39)
    code, _, err = run("audit", "prove", "--entry", "-1", data=log)
    assert code == 2
    assert "entry -1 does not exist" in err


def test_prove_refuses_an_entry_no_checkpoint_covers_yet(tmp_path: Path) -> None:
    with open_broker(tmp_path / "data") as broker:
        broker.switch_theme("woninginbraak", True, NOW)
        broker.switch_theme("woninginbraak", False, NOW)
        with pytest.raises(ProofUnavailableError, match="entry 1 is not yet covered by a "
                           "signed checkpoint"):
            audit_of(broker).prove(1)


def test_consistency_bundle_round_trip(log: Path, key: str, tmp_path: Path) -> None:
    out = tmp_path / "c.json"
    code, text, _ = run("audit", "consistency", "16", "latest", "--out", out, data=log)
    assert code == 0, text
    code, text, _ = run("audit", "verify-consistency", out, "--public-key", key)
    assert code == 0, text
    assert text == (f"consistent: the log {ORIGIN} at size 39 extends its signed state at "
                    "size 16\n")
    for old, new in [(1, 8), (8, 16), (16, 24), (24, 32), (32, 39), (1, 39), (39, 39)]:
        verify_consistency_bundle(consistency(log, old, new), parse_verifier_key(key), ORIGIN)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda b: b.update(old=b["new"], new=b["old"]),
     "rollback: new checkpoint size 16 is smaller than verified size 24"),
    (lambda b: b.update(consistency_proof=b["consistency_proof"][:-1]), "consistency proof"),
    (lambda b: b.update(consistency_proof=[]), "empty consistency proof from size 16 to 24"),
    (lambda b: b["old"].update(tree_size=1), "old.tree_size 1 is not its signed checkpoint's"),
    (lambda b: b.update(origin="x"), "bundle names origin 'x'"),
])
def test_an_edited_consistency_bundle_is_refused(log: Path, key: str, edit: Any,
                                                 message: str) -> None:
    bundle = consistency(log, 16, 24)
    edit(bundle)
    with pytest.raises(BundleError, match=re.escape(message)):
        verify_consistency_bundle(bundle, parse_verifier_key(key), ORIGIN)


def test_a_fork_signed_with_the_real_key_is_refused(log: Path, key: str) -> None:
    with open_broker(log) as broker:
        signer = audit_of(broker).signer
    bundle = consistency(log, 16, 24)
    bundle["new"]["checkpoint"] = signer.sign(Checkpoint(ORIGIN, 24, b"\x05" * 32))
    with pytest.raises(BundleError, match="checkpoint at size 24 is not an extension of the "
                       "checkpoint at size 16: consistency proof does not match the new root"):
        verify_consistency_bundle(bundle, parse_verifier_key(key), ORIGIN)


def test_consistency_needs_signed_sizes(log: Path) -> None:
    with pytest.raises(ProofUnavailableError, match=re.escape(
            "no signed checkpoint at size 23; checkpoints exist at sizes 8, 16, 24, 32, 39 "
            "(and others)")):
        consistency(log, 23, 32)
    code, _, err = run("audit", "consistency", "16", "soon", data=log)
    assert code == 2
    assert "NEW_SIZE must be a number or 'latest'" in err


def test_bundle_sizes_stay_small(log: Path) -> None:
    assert len(json.dumps(prove(log, 5))) < 6000
    assert len(json.dumps(consistency(log, 16, 39))) < 1500
