"""Tests for broker.audit.checkpoint: C2SP signed notes carrying tlog checkpoints.

External anchors: the golang.org/x/mod/sumdb/note example (PeterNeumann), the
transparency-dev/formats test key "Log", and a real sum.golang.org checkpoint.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from broker.audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointSigner,
    ForkError,
    RollbackError,
    VerifierKey,
    check_consistent,
    check_inclusion,
    export_public_key_pem,
    key_id,
    load_or_create_signing_key,
    open_checkpoint,
    parse_verifier_key,
    verifier_key_string,
)
from broker.audit.merkle import (
    ProofError,
    VerificationError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_from_leaf_hashes,
)

ORIGIN = "audit.broker.example/covenant-log"
NAME = "audit.broker.example"
EM_DASH = "\u2014"

LEAVES = [leaf_hash(b"record %d" % i) for i in range(16)]
FORKED = LEAVES[:5] + [leaf_hash(b"other record %d" % i) for i in range(5, 16)]


def _key(seed: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _independent_key_id(name: str, public_key: Ed25519PublicKey) -> bytes:
    """C2SP signed-note: SHA-256(name || 0x0A || 0x01 || key)[:4], written out again."""
    return hashlib.sha256(name.encode() + b"\n" + b"\x01" + _raw(public_key)).digest()[:4]


def _signature_line(key: Ed25519PrivateKey, name: str, text: str) -> str:
    blob = _independent_key_id(name, key.public_key()) + key.sign(text.encode())
    return f"{EM_DASH} {name} {base64.b64encode(blob).decode()}\n"


def _note(text: str, key: Ed25519PrivateKey, name: str = NAME) -> str:
    """A signed note over arbitrary text, built without the code under test."""
    return text + "\n" + _signature_line(key, name, text)


def _cp(size: int, leaves: list[bytes] = LEAVES) -> Checkpoint:
    return Checkpoint(ORIGIN, size, root_from_leaf_hashes(leaves[:size]))


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.fixture
def signer() -> CheckpointSigner:
    return CheckpointSigner(_key(1), NAME)


@pytest.fixture
def verifier(signer: CheckpointSigner) -> VerifierKey:
    return parse_verifier_key(signer.verifier_key())


# --------------------------------------------------------------------------------------
# Format and round trip
# --------------------------------------------------------------------------------------


def test_body_is_origin_size_and_base64_root() -> None:
    cp = _cp(5)
    assert cp.body() == f"{ORIGIN}\n5\n{_b64(cp.root)}\n".encode()


@pytest.mark.parametrize(
    ("origin", "size", "root", "message"),
    [
        ("", 1, LEAVES[0], "non-empty"),
        ("a\nb", 1, LEAVES[0], "one line"),
        ("a\x00b", 1, LEAVES[0], "control characters"),
        (ORIGIN, -1, LEAVES[0], "outside 0..2\\*\\*64-1"),
        (ORIGIN, 2**64, LEAVES[0], "outside"),
        (ORIGIN, True, LEAVES[0], "must be an int"),
        (ORIGIN, 1, LEAVES[0][:31], "32 bytes"),
        (ORIGIN, 0, LEAVES[0], "size 0 must carry the empty root"),
    ],
)
def test_checkpoint_rejects_invalid_fields(
    origin: str, size: int, root: bytes, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Checkpoint(origin, size, root)


@pytest.mark.parametrize("size", [0, 1, 5, 16])
def test_round_trip(signer: CheckpointSigner, verifier: VerifierKey, size: int) -> None:
    cp = _cp(size)
    note = signer.sign(cp)
    assert open_checkpoint(note, verifier, ORIGIN) == cp
    # The exact C2SP layout: body, blank line, one em-dash signature line.
    body = cp.body().decode()
    assert note.startswith(body + "\n" + EM_DASH + " " + NAME + " ")
    assert note.endswith("\n")
    assert note == _note(body, _key(1))  # Ed25519 is deterministic
    blob = base64.b64decode(note.splitlines()[-1].split(" ")[2])
    assert blob[:4] == _independent_key_id(NAME, _key(1).public_key()) == signer.key_id
    assert len(blob) == 4 + 64


def test_round_trip_at_the_largest_size(signer: CheckpointSigner, verifier: VerifierKey) -> None:
    cp = Checkpoint(ORIGIN, 2**64 - 1, LEAVES[3])
    assert open_checkpoint(signer.sign(cp), verifier, ORIGIN) == cp


def test_key_id_and_verifier_key_format(signer: CheckpointSigner) -> None:
    public = _key(1).public_key()
    assert key_id(NAME, public) == _independent_key_id(NAME, public)
    key_data = _b64(b"\x01" + _raw(public))
    expected = f"{NAME}+{_independent_key_id(NAME, public).hex()}+{key_data}"
    assert verifier_key_string(NAME, public) == expected == signer.verifier_key()
    parsed = parse_verifier_key(expected)
    assert parsed.name == NAME
    assert parsed.key_id == signer.key_id
    assert _raw(parsed.public_key) == _raw(public)


# --------------------------------------------------------------------------------------
# Interoperability with the Go implementations (known-answer tests)
# --------------------------------------------------------------------------------------

# golang.org/x/mod/sumdb/note, package documentation and note_test.go
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n" + EM_DASH + " PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
# transparency-dev/formats log/note_test.go
FORMATS_SKEY = "PRIVATE+KEY+Log+2271c621+AdEIq9FLRQni54Wg68T96VJO+iayOaulswav2DUMKgvQ"
FORMATS_VKEY = "Log+2271c621+AemuH5ooBpEPcr+W8onrjA1NfuzBVHdezakU81Ekarvs"
# A real sum.golang.org checkpoint (transparency-dev/formats log/note_test.go)
SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_NOTE = (
    "go.sum database tree\n"
    "6476701\n"
    "mb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk=\n"
    "\n" + EM_DASH + " sum.golang.org "
    "Az3grsLX85Gz+s1SiTbgkuqxgItqFq7gsMUEyVnrsa9LM7Us9S+1xbFIGu95949rj4nPRYfvimWEPWL+o3GeoWwOoAw=\n"
)


def _go_private_key(skey: str) -> tuple[str, Ed25519PrivateKey]:
    _, _, name, _, data = skey.split("+", 4)
    raw = base64.b64decode(data)
    assert raw[0] == 1
    return name, Ed25519PrivateKey.from_private_bytes(raw[1:])


@pytest.mark.parametrize(("skey", "vkey"), [(GO_SKEY, GO_VKEY), (FORMATS_SKEY, FORMATS_VKEY)])
def test_verifier_key_string_matches_go(skey: str, vkey: str) -> None:
    name, private = _go_private_key(skey)
    assert verifier_key_string(name, private.public_key()) == vkey
    assert CheckpointSigner(private, name).verifier_key() == vkey
    assert parse_verifier_key(vkey).key_id.hex() == vkey.split("+")[1]


def test_signature_line_matches_go_note_byte_for_byte() -> None:
    name, private = _go_private_key(GO_SKEY)
    signer = CheckpointSigner(private, name)
    line = f"{EM_DASH} {name} {_b64(signer.key_id + private.sign(GO_TEXT.encode()))}\n"
    assert GO_TEXT + "\n" + line == GO_NOTE


def test_go_note_signature_verifies_before_its_body_is_parsed() -> None:
    verifier = parse_verifier_key(GO_VKEY)
    # The signature is good, so the error is about the body (two lines, not a checkpoint).
    with pytest.raises(CheckpointError, match="malformed checkpoint: needs origin, size and root"):
        open_checkpoint(GO_NOTE, verifier, "anything")
    with pytest.raises(CheckpointError, match="bad signature by key PeterNeumann"):
        open_checkpoint(GO_NOTE.replace("cryptography", "cryptographY"), verifier, "anything")


def test_opens_a_real_sum_golang_org_checkpoint() -> None:
    cp = open_checkpoint(SUMDB_NOTE, parse_verifier_key(SUMDB_VKEY), "go.sum database tree")
    assert cp.origin == "go.sum database tree"
    assert cp.size == 6476701
    assert cp.root == base64.b64decode("mb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk=")
    with pytest.raises(CheckpointError, match="wrong origin"):
        open_checkpoint(SUMDB_NOTE, parse_verifier_key(SUMDB_VKEY), "go.sum database tree2")
    with pytest.raises(CheckpointError, match="bad signature"):
        open_checkpoint(
            SUMDB_NOTE.replace("6476701", "6476702"),
            parse_verifier_key(SUMDB_VKEY),
            "go.sum database tree",
        )


# --------------------------------------------------------------------------------------
# Tampering, forgery, wrong keys
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "expected_origin"),
    [
        ("\n8\n", "\n9\n", ORIGIN),  # size
        ("\n8\n", "\n7\n", ORIGIN),
        (ORIGIN + "\n", ORIGIN + "x\n", ORIGIN + "x"),  # origin, and the pinned one follows
        (ORIGIN + "\n", ORIGIN + "x\n", ORIGIN),
    ],
)
def test_tampered_size_or_origin_line_is_rejected(
    signer: CheckpointSigner, verifier: VerifierKey, old: str, new: str, expected_origin: str
) -> None:
    note = signer.sign(_cp(8))
    assert old in note
    with pytest.raises(CheckpointError, match=f"bad signature by key {NAME} on the checkpoint"):
        open_checkpoint(note.replace(old, new, 1), verifier, expected_origin)


def test_tampered_root_line_is_rejected(signer: CheckpointSigner, verifier: VerifierKey) -> None:
    cp = _cp(8)
    note = signer.sign(cp)
    for other in (_cp(7).root, bytes(32), bytes([cp.root[0] ^ 1]) + cp.root[1:]):
        tampered = note.replace(_b64(cp.root), _b64(other))
        with pytest.raises(CheckpointError, match="bad signature"):
            open_checkpoint(tampered, verifier, ORIGIN)


def test_every_single_bit_flip_in_the_signature_is_rejected(
    signer: CheckpointSigner, verifier: VerifierKey
) -> None:
    note = signer.sign(_cp(8))
    head, sig_line = note.rsplit("\n\n", 1)
    prefix, b64_blob = sig_line.rstrip("\n").rsplit(" ", 1)
    blob = base64.b64decode(b64_blob)
    for bit in range(len(blob) * 8):
        bad = bytearray(blob)
        bad[bit // 8] ^= 1 << (bit % 8)
        forged = f"{head}\n\n{prefix} {_b64(bytes(bad))}\n"
        expected = "no signature by key" if bit < 32 else "bad signature"
        with pytest.raises(CheckpointError, match=expected):
            open_checkpoint(forged, verifier, ORIGIN)


def test_forged_signatures_are_rejected(signer: CheckpointSigner, verifier: VerifierKey) -> None:
    body = _cp(8).body().decode()
    kid = signer.key_id
    attempts = {
        "random bytes": kid + os.urandom(64),
        "zeros": kid + bytes(64),
        "another key's signature": kid + _key(2).sign(body.encode()),
        "our signature over another body": kid + _key(1).sign(_cp(9).body()),
    }
    for blob in attempts.values():
        forged = f"{body}\n{EM_DASH} {NAME} {_b64(blob)}\n"
        with pytest.raises(CheckpointError, match=f"bad signature by key {NAME}"):
            open_checkpoint(forged, verifier, ORIGIN)
    truncated = f"{body}\n{EM_DASH} {NAME} {_b64(kid + _key(1).sign(body.encode())[:63])}\n"
    with pytest.raises(CheckpointError, match="63 bytes, expected 64"):
        open_checkpoint(truncated, verifier, ORIGIN)


def test_wrong_public_key_is_rejected(signer: CheckpointSigner) -> None:
    note = signer.sign(_cp(8))
    impostor = parse_verifier_key(verifier_key_string(NAME, _key(2).public_key()))
    with pytest.raises(CheckpointError, match=rf"no signature by key {NAME} \([0-9a-f]{{8}}\)"):
        open_checkpoint(note, impostor, ORIGIN)


def test_signature_by_a_key_of_another_name_is_rejected(verifier: VerifierKey) -> None:
    body = _cp(8).body().decode()
    # The right key under another name (so another key id), and the name relabelled.
    other_name = _note(body, _key(1), name="someone.else")
    with pytest.raises(CheckpointError, match=f"no signature by key {NAME}"):
        open_checkpoint(other_name, verifier, ORIGIN)
    relabelled = other_name.replace(f"{EM_DASH} someone.else ", f"{EM_DASH} {NAME} ")
    with pytest.raises(CheckpointError, match=f"no signature by key {NAME}"):
        open_checkpoint(relabelled, verifier, ORIGIN)


def test_cosignatures_by_other_keys_are_ignored(
    signer: CheckpointSigner, verifier: VerifierKey
) -> None:
    cp = _cp(8)
    note = signer.sign(cp)
    body = cp.body().decode()
    witness = _signature_line(_key(3), "witness.example", body)
    assert open_checkpoint(note + witness, verifier, ORIGIN) == cp
    reordered = body + "\n" + witness + note[len(body) + 1 :]
    assert open_checkpoint(reordered, verifier, ORIGIN) == cp
    # Only other keys: nothing by ours.
    with pytest.raises(CheckpointError, match="no signature by key"):
        open_checkpoint(body + "\n" + witness, verifier, ORIGIN)


def test_wrong_origin_is_rejected(signer: CheckpointSigner, verifier: VerifierKey) -> None:
    note = signer.sign(_cp(8))
    with pytest.raises(CheckpointError, match=f"wrong origin: '{ORIGIN}', expected 'other.log'"):
        open_checkpoint(note, verifier, "other.log")


# --------------------------------------------------------------------------------------
# Strict parsing
# --------------------------------------------------------------------------------------


def _good_note() -> str:
    return CheckpointSigner(_key(1), NAME).sign(_cp(8))


def _non_canonical_b64(raw: bytes) -> str:
    """Same bytes, but the unused low bits before the padding are set."""
    text = base64.b64encode(raw).decode()
    assert text.endswith("=")
    body = text.rstrip("=")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet[alphabet.index(body[-1]) + 1]
    weird = body[:-1] + last + text[len(body) :]
    assert base64.b64decode(weird) == raw
    return weird


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda n: "", "no blank line"),
        (lambda n: n.replace("\n\n", "\n"), "no blank line"),
        (lambda n: n[:-1], "must end with a newline"),
        (lambda n: n + "\n", "signature block must end with a newline"),
        (lambda n: n.replace(EM_DASH, "-"), "does not start with an em dash"),
        (lambda n: n.replace(EM_DASH, "\u2013"), "does not start with an em dash"),
        (lambda n: n.replace(EM_DASH + " ", EM_DASH), "does not start with an em dash"),
        (lambda n: n.replace(f"{NAME} ", f"{NAME}  "), "is not '<name> <base64>'"),
        (lambda n: n.replace(f"{NAME} ", f"{NAME}\t"), "control characters"),
        (lambda n: n.replace("\n", "\r\n"), "control characters"),
        (lambda n: n.replace("\n", "\x00", 1), "control characters"),
        (lambda n: n + "x" * 70_000, "longer than"),
        (lambda n: n.replace(f" {NAME} ", " a+b "), "bad key name"),
        (lambda n: n.replace(f" {NAME} ", f" {NAME}\u00a0x "), "bad key name"),
        (lambda n: n.rsplit(" ", 1)[0] + " " + _b64(b"\x01\x02\x03\x04") + "\n", "not base64"),
        (lambda n: n.rsplit(" ", 1)[0] + " !!!!\n", "not base64"),
        (lambda n: n.rstrip("=\n") + "\n", "not base64"),
        (
            lambda n: (
                n.rsplit(" ", 1)[0]
                + " "
                + _non_canonical_b64(base64.b64decode(n.rsplit(" ", 1)[1]))
                + "\n"
            ),
            "not base64",
        ),
        (lambda n: n + n[n.index(EM_DASH) :], "two signatures by key"),
        (
            lambda n: n + "".join(f"{EM_DASH} w{i} {_b64(bytes(68))}\n" for i in range(100)),
            "more than 100 signatures",
        ),
        (lambda n: n.encode(), "expected str, got bytes"),
        (lambda n: n.replace(ORIGIN, ORIGIN + "\ud800"), "control characters"),
    ],
)
def test_malformed_notes_are_rejected(mangle: Callable[[str], str], message: str) -> None:
    verifier = parse_verifier_key(CheckpointSigner(_key(1), NAME).verifier_key())
    with pytest.raises(CheckpointError, match=message):
        open_checkpoint(mangle(_good_note()), verifier, ORIGIN)


@pytest.mark.parametrize(
    "size_line",
    ["007", "08", "+7", "-1", " 7", "7 ", "0x7", "7_0", "7.0", "1e3", "", "\u0667", "\uff17"],
)
def test_non_canonical_size_is_rejected(verifier: VerifierKey, size_line: str) -> None:
    root = _b64(LEAVES[0])
    note = _note(f"{ORIGIN}\n{size_line}\n{root}\n", _key(1))
    with pytest.raises(CheckpointError, match="non-canonical size line"):
        open_checkpoint(note, verifier, ORIGIN)


def test_size_beyond_uint64_is_rejected(verifier: VerifierKey) -> None:
    note = _note(f"{ORIGIN}\n{2**64}\n{_b64(LEAVES[0])}\n", _key(1))
    with pytest.raises(CheckpointError, match="exceeds 2\\*\\*64-1"):
        open_checkpoint(note, verifier, ORIGIN)


@pytest.mark.parametrize(
    ("root_line", "message"),
    [
        (_b64(bytes(31)), "root is 31 bytes, expected 32"),
        (_b64(bytes(33)), "root is 33 bytes, expected 32"),
        (_b64(b""), "root is 0 bytes, expected 32"),
        (_b64(bytes(32)).rstrip("="), "not canonical base64"),
        (_non_canonical_b64(LEAVES[0]), "not canonical base64"),
        (base64.urlsafe_b64encode(b"\xff" * 32).decode(), "not canonical base64"),
        (LEAVES[0].hex(), "root is 48 bytes, expected 32"),
    ],
)
def test_root_must_be_32_canonical_bytes(
    verifier: VerifierKey, root_line: str, message: str
) -> None:
    note = _note(f"{ORIGIN}\n8\n{root_line}\n", _key(1))
    with pytest.raises(CheckpointError, match=message):
        open_checkpoint(note, verifier, ORIGIN)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (f"{ORIGIN}\n8\n{_b64(LEAVES[0])}\nextension line\n", "extension lines are not accepted"),
        (f"{ORIGIN}\n\n8\n{_b64(LEAVES[0])}\n", "extension lines are not accepted"),
        (f"{ORIGIN}\n8\n", "needs origin, size and root lines"),
        (f"\n8\n{_b64(LEAVES[0])}\n", "empty origin line"),
        (f"{ORIGIN}\n0\n{_b64(LEAVES[0])}\n", "size 0 with a root other than the empty root"),
    ],
)
def test_signed_but_malformed_bodies_are_rejected(
    verifier: VerifierKey, body: str, message: str
) -> None:
    with pytest.raises(CheckpointError, match=message):
        open_checkpoint(_note(body, _key(1)), verifier, ORIGIN)


def test_checkpoint_error_is_a_verification_error() -> None:
    assert issubclass(CheckpointError, VerificationError)
    assert issubclass(RollbackError, CheckpointError)
    assert issubclass(ForkError, CheckpointError)


# --------------------------------------------------------------------------------------
# Verifier keys and signer names
# --------------------------------------------------------------------------------------


def _vkey(name: str = NAME, kid: str | None = None, data: bytes | None = None) -> str:
    public = _key(1).public_key()
    kid = kid if kid is not None else _independent_key_id(name, public).hex()
    data = data if data is not None else b"\x01" + _raw(public)
    return f"{name}+{kid}+{_b64(data)}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_vkey(kid="00000000"), "does not match its name and key"),
        (_vkey(kid=_vkey().split("+")[1].upper()), "8 lowercase hex digits"),
        (_vkey(kid="abc"), "8 lowercase hex digits"),
        (_vkey(data=b"\x02" + _raw(_key(1).public_key())), "0x01 followed by a 32-byte"),
        (_vkey(data=b"\x01" + _raw(_key(1).public_key())[:31]), "0x01 followed by a 32-byte"),
        (_vkey(data=_raw(_key(1).public_key())), "0x01 followed by a 32-byte"),
        (_vkey()[:-1] + "-", "not canonical base64"),  # URL-safe alphabet
        (_vkey() + "=", "not canonical base64"),
        (_vkey(name=""), "name must be non-empty"),
        (_vkey(name="a b"), "name must be non-empty"),
        (NAME + "+" + _vkey().split("+")[1], "must be <name>"),
        (NAME, "must be <name>"),
        (_vkey() + "+", "not canonical base64"),
    ],
)
def test_bad_verifier_keys_are_rejected(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_verifier_key(text)


@pytest.mark.parametrize("name", ["", "a b", "a+b", "tab\there", "nbsp\u00a0x"])
def test_signer_rejects_invalid_key_names(name: str) -> None:
    with pytest.raises(ValueError, match="key name"):
        CheckpointSigner(_key(1), name)
    with pytest.raises(ValueError, match="key name"):
        verifier_key_string(name, _key(1).public_key())


def test_signer_repr_does_not_show_the_key(signer: CheckpointSigner) -> None:
    seed = _key(1).private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    text = repr(signer)
    assert NAME in text
    assert seed.hex() not in text
    assert _b64(seed) not in text


# --------------------------------------------------------------------------------------
# Consistency between checkpoints: rollback, fork, extension; inclusion via a checkpoint
# --------------------------------------------------------------------------------------


def test_consistent_extension_is_accepted() -> None:
    for old in range(17):
        for new in range(old, 17):
            check_consistent(_cp(old), _cp(new), consistency_proof(LEAVES, old, new))


def test_rollback_is_rejected() -> None:
    with pytest.raises(
        RollbackError, match="rollback: new checkpoint size 5 is smaller than verified size 8"
    ):
        check_consistent(_cp(8), _cp(5), consistency_proof(LEAVES, 5, 8))
    with pytest.raises(RollbackError, match="rollback"):
        check_consistent(_cp(1), _cp(0), [])


def test_fork_at_the_same_size_is_rejected() -> None:
    with pytest.raises(
        ForkError, match=r"fork: two roots for size 8: [0-9a-f]{64} and [0-9a-f]{64}"
    ):
        check_consistent(_cp(8), _cp(8, FORKED), [])


def test_fork_at_a_larger_size_fails_the_consistency_proof() -> None:
    for proof in (consistency_proof(FORKED, 8, 12), consistency_proof(LEAVES, 8, 12)):
        with pytest.raises(ProofError, match=r"does not match the (old|new) root"):
            check_consistent(_cp(8), _cp(12, FORKED), proof)
    # Before the fork point the forked log really does extend the old checkpoint.
    check_consistent(_cp(5), _cp(12, FORKED), consistency_proof(FORKED, 5, 12))


def test_consistency_needs_the_same_origin() -> None:
    other = Checkpoint("another.log", 9, _cp(9).root)
    with pytest.raises(CheckpointError, match="checkpoints of different logs"):
        check_consistent(_cp(8), other, consistency_proof(LEAVES, 8, 9))


def test_bad_consistency_proofs_between_checkpoints_are_rejected() -> None:
    proof = consistency_proof(LEAVES, 6, 13)
    with pytest.raises(ProofError, match="too short"):
        check_consistent(_cp(6), _cp(13), proof[:-1])
    with pytest.raises(ProofError, match="too long"):
        check_consistent(_cp(6), _cp(13), [*proof, LEAVES[0]])
    with pytest.raises(ProofError, match="empty consistency proof"):
        check_consistent(_cp(6), _cp(13), [])
    with pytest.raises(ProofError, match="equal sizes \\(8\\) needs an empty proof"):
        check_consistent(_cp(8), _cp(8), [LEAVES[0]])


def test_inclusion_is_checked_against_the_checkpoint_size_and_root() -> None:
    cp = _cp(13)
    for index in range(13):
        check_inclusion(cp, LEAVES[index], index, inclusion_proof(LEAVES, index, 13))
    with pytest.raises(ProofError, match="does not match the root"):
        check_inclusion(cp, LEAVES[4], 4, inclusion_proof(LEAVES, 4, 12))
    with pytest.raises(ProofError, match="does not match the root"):
        check_inclusion(cp, FORKED[7], 7, inclusion_proof(FORKED, 7, 13))
    with pytest.raises(ProofError, match="not less than tree size 13"):
        check_inclusion(cp, LEAVES[0], 13, [])


def test_end_to_end_auditor_flow(signer: CheckpointSigner) -> None:
    """Pin key and origin, open each new checkpoint, require consistency, keep the last."""
    pinned = parse_verifier_key(signer.verifier_key())
    trusted = open_checkpoint(signer.sign(_cp(0)), pinned, ORIGIN)
    for size in (1, 2, 3, 8, 13, 16):
        new = open_checkpoint(signer.sign(_cp(size)), pinned, ORIGIN)
        check_consistent(trusted, new, consistency_proof(LEAVES, trusted.size, new.size))
        trusted = new
    stale = open_checkpoint(signer.sign(_cp(13)), pinned, ORIGIN)
    with pytest.raises(RollbackError):
        check_consistent(trusted, stale, [])
    forked = open_checkpoint(signer.sign(_cp(16, FORKED)), pinned, ORIGIN)
    with pytest.raises(ForkError):
        check_consistent(trusted, forked, [])


# --------------------------------------------------------------------------------------
# Key files
# --------------------------------------------------------------------------------------


def test_signing_key_is_created_with_mode_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "audit-signing.pem"
    old_umask = os.umask(0)  # the most permissive umask must not widen the mode
    try:
        key = load_or_create_signing_key(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    content = path.read_bytes()
    assert content.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    again = load_or_create_signing_key(path)
    assert _raw(again.public_key()) == _raw(key.public_key())
    assert path.read_bytes() == content  # never overwritten
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_signing_key_file_with_another_key_type_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "ec.pem"
    ec_key = ec.generate_private_key(ec.SECP256R1())
    path.touch(mode=0o600)  # a key file passes the mode rule only when 0600
    path.write_bytes(
        ec_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ValueError, match="not an Ed25519 private key"):
        load_or_create_signing_key(path)


def test_garbage_key_file_is_rejected_without_echoing_it(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pem"
    path.touch(mode=0o600)  # a key file passes the mode rule only when 0600
    path.write_bytes(b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0LXZhbHVl\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ValueError, match="not an unencrypted PEM private key") as caught:
        load_or_create_signing_key(path)
    assert "c2VjcmV0" not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_key_is_not_created_through_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.pem"
    link = tmp_path / "audit.pem"
    link.symlink_to(target)
    with pytest.raises(FileNotFoundError):
        load_or_create_signing_key(link)
    assert not target.exists()


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_or_create_signing_key(tmp_path / "no-such-dir" / "key.pem")


def test_export_public_key_pem(tmp_path: Path) -> None:
    key = load_or_create_signing_key(tmp_path / "k.pem")
    for source in (key, key.public_key()):
        pem = export_public_key_pem(source)
        assert pem.startswith(b"-----BEGIN PUBLIC KEY-----\n")
        loaded = serialization.load_pem_public_key(pem)
        assert isinstance(loaded, Ed25519PublicKey)
        assert _raw(loaded) == _raw(key.public_key())
    assert b"PRIVATE" not in export_public_key_pem(key)
