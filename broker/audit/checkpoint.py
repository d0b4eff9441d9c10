"""Signed checkpoints of the audit log, in the C2SP signed-note format.

A checkpoint (C2SP tlog-checkpoint) commits to the log's origin, its tree size and its
RFC 9162 root hash:

    <origin>\\n<size>\\n<base64 root>\\n

A signed note (C2SP signed-note) is that body, a blank line, and signature lines
``— <key name> <base64(key id || Ed25519 signature)>`` (U+2014 EM DASH, a space). The key
id is the first 4 bytes of SHA-256(key name || 0x0A || 0x01 || public key); 0x01 names
Ed25519. A verifier key is written ``<name>+<8 hex key id>+<base64(0x01 || public key)>``.

An auditor pins the origin and the verifier key out of band. `open_checkpoint` accepts a
note only if it parses strictly, carries exactly one valid signature by the pinned key and
names the pinned origin. Signatures by other keys (witness cosignatures) are ignored.
Extension lines after the root line are rejected: this log never writes them, and a
checkpoint is never accepted with signed content this code does not model.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from broker.audit.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    MAX_TREE_SIZE,
    VerificationError,
    verify_consistency,
    verify_inclusion,
)
from broker.errors import TrustAnchorError
from broker.keys import new_signing_pem, read_or_create_private, signing_key_from_pem

__all__ = [
    "ALG_ED25519",
    "Checkpoint",
    "CheckpointError",
    "CheckpointSigner",
    "ForkError",
    "RollbackError",
    "VerifierKey",
    "check_consistent",
    "check_inclusion",
    "export_public_key_pem",
    "key_id",
    "load_or_create_signing_key",
    "open_checkpoint",
    "parse_verifier_key",
    "pinned_verifier_key",
    "trusted_checkpoint_note",
    "verifier_key_string",
]

ALG_ED25519 = 0x01
"""C2SP signed-note signature type byte for Ed25519."""

_SIG_PREFIX = "\u2014 "  # EM DASH, space
_KEY_ID_SIZE = 4
_ED25519_SIG_SIZE = 64
_ED25519_KEY_SIZE = 32
_MAX_NOTE_CHARS = 64 * 1024
_MAX_SIGNATURES = 100  # as golang.org/x/mod/sumdb/note
_SIZE_RE = re.compile(r"0|[1-9][0-9]*")  # ASCII decimal, no sign, no leading zeros
_HEX_KEY_ID_RE = re.compile(r"[0-9a-f]{8}")


class CheckpointError(VerificationError):
    """A checkpoint note is malformed, unsigned, badly signed or for another log."""


class RollbackError(CheckpointError):
    """A newer checkpoint has a smaller tree size than one already verified."""


class ForkError(CheckpointError):
    """Two checkpoints of the same log and size have different roots: evidence of a fork."""


def _has_control(text: str) -> bool:
    """True if `text` has a control character other than newline (or is not UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return True
    return any(ch != "\n" and unicodedata.category(ch) == "Cc" for ch in text)


def _valid_key_name(name: str) -> bool:
    return (
        bool(name)
        and "+" not in name
        and not any(ch.isspace() for ch in name)
        and not _has_control(name)
    )


def _b64decode_canonical(text: str) -> bytes | None:
    """Standard padded base64, rejecting anything that does not re-encode identically."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, binascii.Error):  # includes UnicodeEncodeError
        return None
    if base64.b64encode(raw).decode("ascii") != text:
        return None
    return raw


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class Checkpoint:
    """(origin, tree size, root hash) of the log at one moment."""

    origin: str
    size: int
    root: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or not self.origin:
            raise ValueError("checkpoint origin must be a non-empty string")
        if "\n" in self.origin or _has_control(self.origin):
            raise ValueError("checkpoint origin must be one line without control characters")
        if not isinstance(self.size, int) or isinstance(self.size, bool):
            raise ValueError("checkpoint size must be an int")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise ValueError(f"checkpoint size {self.size} is outside 0..2**64-1")
        if not isinstance(self.root, bytes) or len(self.root) != HASH_SIZE:
            raise ValueError(f"checkpoint root must be {HASH_SIZE} bytes")
        if self.size == 0 and self.root != EMPTY_ROOT:
            raise ValueError("a checkpoint of size 0 must carry the empty root")

    def body(self) -> bytes:
        """The signed note text: origin, size and base64 root lines."""
        return f"{self.origin}\n{self.size}\n{_b64(self.root)}\n".encode()


def key_id(name: str, public_key: Ed25519PublicKey) -> bytes:
    """C2SP key id: SHA-256(name || 0x0A || 0x01 || public key)[:4]."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + raw).digest()
    return digest[:_KEY_ID_SIZE]


@dataclass(frozen=True)
class VerifierKey:
    """A parsed verifier key: the key name, its 4-byte key id and the Ed25519 key."""

    name: str
    key_id: bytes
    public_key: Ed25519PublicKey


def verifier_key_string(name: str, public_key: Ed25519PublicKey) -> str:
    """The C2SP vkey text ``<name>+<hex key id>+<base64(0x01 || public key)>``."""
    if not _valid_key_name(name):
        raise ValueError("key name must be non-empty, without spaces or '+'")
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"{name}+{key_id(name, public_key).hex()}+{_b64(bytes([ALG_ED25519]) + raw)}"


def parse_verifier_key(text: str) -> VerifierKey:
    """Parse a C2SP vkey string strictly. Raises ValueError if anything is off."""
    parts = text.split("+", 2)  # the base64 key data may itself contain "+"
    if len(parts) != 3:
        raise ValueError("verifier key must be <name>+<hex key id>+<base64 key>")
    name, hex_id, b64_key = parts
    if not _valid_key_name(name):
        raise ValueError("verifier key name must be non-empty, without spaces or '+'")
    if not _HEX_KEY_ID_RE.fullmatch(hex_id):
        raise ValueError("verifier key id must be 8 lowercase hex digits")
    raw = _b64decode_canonical(b64_key)
    if raw is None:
        raise ValueError("verifier key data is not canonical base64")
    if len(raw) != 1 + _ED25519_KEY_SIZE or raw[0] != ALG_ED25519:
        raise ValueError("verifier key data must be 0x01 followed by a 32-byte Ed25519 key")
    public_key = Ed25519PublicKey.from_public_bytes(raw[1:])
    expected_id = key_id(name, public_key)
    if expected_id.hex() != hex_id:
        raise ValueError("verifier key id does not match its name and key")
    return VerifierKey(name=name, key_id=expected_id, public_key=public_key)


def pinned_verifier_key(value: str, origin: str | None,
                        where: str = "--public-key") -> VerifierKey:
    """The verifier key an auditor pinned: a vkey string, or a file holding one or an
    Ed25519 PEM public key (which carries no key name, so `origin` names it).

    Raises TrustAnchorError naming `where` (the option) and what is wrong, so a bad key is
    "could not run" and never mistaken for a finding about the log.
    """
    text = value
    path = Path(value)
    if "+" not in value and path.is_file():
        try:
            text = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise TrustAnchorError(f"{where} {value}: cannot read the public key: "
                                   f"{exc}") from None
    if "PRIVATE KEY" in text:  # never echo it: name the file only
        raise TrustAnchorError(f"{where} {value}: holds a private key; pin the public key "
                               "(`audit public-key` prints it)")
    if "BEGIN PUBLIC KEY" in text:
        if not origin:
            raise TrustAnchorError(f"{where}: a PEM public key carries no key name: pass "
                                   "--origin too")
        try:
            key = load_pem_public_key(text.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            raise TrustAnchorError(f"{where} {value}: not a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise TrustAnchorError(f"{where} {value}: not an Ed25519 public key")
        try:
            text = verifier_key_string(origin, key)
        except ValueError as exc:
            raise TrustAnchorError(f"--origin {origin!r}: {exc}") from None
    try:
        return parse_verifier_key(text.strip())
    except ValueError as exc:
        hint = "" if path.is_file() or "+" in value else " (and no such file)"
        raise TrustAnchorError(f"{where}: {exc}{hint}; give the key `audit public-key` "
                               "prints, or a file holding it or the PEM") from None


def trusted_checkpoint_note(note: str, where: str) -> str:
    """`note` if it has the form of a signed note; else TrustAnchorError naming `where`.

    Only the form is checked here: whether the pinned key signed it, and whether the log
    still matches it, are findings of the verification itself.
    """
    try:
        _split_note(note)
    except CheckpointError as exc:
        raise TrustAnchorError(f"{where}: not a signed checkpoint ({exc})") from None
    return note


class CheckpointSigner:
    """Signs checkpoints as C2SP signed notes with one Ed25519 key and key name."""

    def __init__(self, private_key: Ed25519PrivateKey, name: str) -> None:
        if not _valid_key_name(name):
            raise ValueError("key name must be non-empty, without spaces or '+'")
        self._key = private_key
        self._name = name
        self._key_id = key_id(name, private_key.public_key())

    def __repr__(self) -> str:  # never show the key
        return f"CheckpointSigner(name={self._name!r}, key_id={self._key_id.hex()})"

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> bytes:
        return self._key_id

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    def verifier_key(self) -> str:
        """The vkey string an auditor pins to verify this signer's notes."""
        return verifier_key_string(self._name, self.public_key)

    def sign(self, checkpoint: Checkpoint) -> str:
        """The full signed note: body, blank line, one signature line."""
        body = checkpoint.body()
        signature = self._key.sign(body)
        line = f"{_SIG_PREFIX}{self._name} {_b64(self._key_id + signature)}\n"
        return body.decode() + "\n" + line


def _split_note(note: str) -> tuple[str, list[tuple[str, bytes]]]:
    """Split a signed note into its text and (key name, key id || signature) pairs."""
    if not isinstance(note, str):
        raise CheckpointError(f"malformed note: expected str, got {type(note).__name__}")
    if len(note) > _MAX_NOTE_CHARS:
        raise CheckpointError(f"malformed note: longer than {_MAX_NOTE_CHARS} characters")
    if _has_control(note):
        raise CheckpointError(
            "malformed note: not UTF-8 or has control characters other than newline"
        )
    split = note.rfind("\n\n")
    if split < 0:
        raise CheckpointError("malformed note: no blank line before the signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block.endswith("\n"):
        raise CheckpointError("malformed note: signature block must end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > _MAX_SIGNATURES:
        raise CheckpointError(f"malformed note: more than {_MAX_SIGNATURES} signatures")
    signatures: list[tuple[str, bytes]] = []
    seen: set[tuple[str, bytes]] = set()
    for number, line in enumerate(lines, start=1):
        if not line.startswith(_SIG_PREFIX):
            raise CheckpointError(
                f"malformed note: signature line {number} does not start with an em dash"
            )
        fields = line[len(_SIG_PREFIX) :].split(" ")
        if len(fields) != 2:
            raise CheckpointError(
                f"malformed note: signature line {number} is not '<name> <base64>'"
            )
        name, b64_sig = fields
        if not _valid_key_name(name):
            raise CheckpointError(f"malformed note: signature line {number} has a bad key name")
        raw = _b64decode_canonical(b64_sig)
        if raw is None or len(raw) <= _KEY_ID_SIZE:
            raise CheckpointError(
                f"malformed note: signature line {number} is not base64 of key id and signature"
            )
        ident = (name, raw[:_KEY_ID_SIZE])
        if ident in seen:
            raise CheckpointError(f"malformed note: two signatures by key {name} ({raw[:4].hex()})")
        seen.add(ident)
        signatures.append((name, raw))
    return text, signatures


def open_checkpoint(note: str, verifier: VerifierKey, expected_origin: str) -> Checkpoint:
    """Verify a signed checkpoint note against a pinned key and origin; parse it strictly.

    Raises CheckpointError for a malformed note, no signature by `verifier` (same name and
    key id), a bad signature, extension lines, a wrong origin, a non-canonical size or a
    root that is not 32 bytes.
    """
    text, signatures = _split_note(note)

    # Signature first: nothing of the body is trusted or interpreted before it verifies.
    mine = [raw for name, raw in signatures if name == verifier.name]
    mine = [raw for raw in mine if raw[:_KEY_ID_SIZE] == verifier.key_id]
    if not mine:
        raise CheckpointError(
            f"no signature by key {verifier.name} ({verifier.key_id.hex()}) on the checkpoint"
        )
    signature = mine[0][_KEY_ID_SIZE:]
    if len(signature) != _ED25519_SIG_SIZE:
        raise CheckpointError(
            f"bad signature by key {verifier.name}: {len(signature)} bytes, expected 64"
        )
    try:
        verifier.public_key.verify(signature, text.encode())
    except InvalidSignature:
        raise CheckpointError(f"bad signature by key {verifier.name} on the checkpoint") from None

    lines = text[:-1].split("\n")  # text ends with "\n" (it precedes the blank line)
    if len(lines) < 3:
        raise CheckpointError("malformed checkpoint: needs origin, size and root lines")
    if len(lines) > 3:
        raise CheckpointError("malformed checkpoint: extension lines are not accepted")
    origin, size_line, root_line = lines
    if not origin:
        raise CheckpointError("malformed checkpoint: empty origin line")
    if origin != expected_origin:
        raise CheckpointError(f"wrong origin: {origin!r}, expected {expected_origin!r}")
    if not _SIZE_RE.fullmatch(size_line):
        raise CheckpointError(f"non-canonical size line {size_line!r}")
    size = int(size_line)
    if size > MAX_TREE_SIZE:
        raise CheckpointError(f"size {size} exceeds 2**64-1")
    root = _b64decode_canonical(root_line)
    if root is None:
        raise CheckpointError("root line is not canonical base64")
    if len(root) != HASH_SIZE:
        raise CheckpointError(f"root is {len(root)} bytes, expected {HASH_SIZE}")
    if size == 0 and root != EMPTY_ROOT:
        raise CheckpointError("checkpoint of size 0 with a root other than the empty root")
    return Checkpoint(origin=origin, size=size, root=root)


def check_consistent(old: Checkpoint, new: Checkpoint, proof: Sequence[bytes]) -> None:
    """Check that `new` extends `old` (both already opened and verified).

    Raises CheckpointError for another origin, RollbackError for a smaller size, ForkError
    for the same size with another root, and ProofError if the consistency proof fails
    (which, for two validly signed checkpoints, is also evidence of a fork).
    """
    if old.origin != new.origin:
        raise CheckpointError(f"checkpoints of different logs: {old.origin!r}, {new.origin!r}")
    if new.size < old.size:
        raise RollbackError(
            f"rollback: new checkpoint size {new.size} is smaller than verified size {old.size}"
        )
    if new.size == old.size and new.root != old.root:
        raise ForkError(
            f"fork: two roots for size {old.size}: {old.root.hex()} and {new.root.hex()}"
        )
    verify_consistency(old.size, new.size, old.root, new.root, proof)


def check_inclusion(
    checkpoint: Checkpoint, leaf_hash: bytes, index: int, proof: Sequence[bytes]
) -> None:
    """verify_inclusion with size and root taken from one verified checkpoint."""
    verify_inclusion(leaf_hash, index, checkpoint.size, proof, checkpoint.root)


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """Load the Ed25519 key in PEM (PKCS#8, unencrypted) at `path`, creating it if absent.

    The file rule and the atomic creation are broker/keys.py's: refused unless 0600 and
    the user's; a new key is written to a 0600 temporary file, fsynced and linked into
    place under a lock, so concurrent first use ends with one key and no reader sees half
    a file. Error messages name the file, never its contents.
    """
    return signing_key_from_pem(read_or_create_private(path, new_signing_pem), path)


def export_public_key_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The public half as PEM SubjectPublicKeyInfo."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
