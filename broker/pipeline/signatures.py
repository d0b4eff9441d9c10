"""Optional Ed25519 signatures of sources on their input, verified at ingest.

A source with a public key in the config (``sources: {politie: {public_key: FILE.pem}}``)
signs every input it sends; the broker quarantines what it sent unsigned
(``signature_missing``) or with a signature that does not verify (``signature_invalid``),
and what another source signed (``wrong_source``: the producing principal is not the
source the event type belongs to). A source without a key is not checked, except that a
signature another source's key verifies is ``wrong_source`` there too.

What is signed: the domain tag, the event type and the exact input bytes::

    b"covenant-broker/source-signature/v1\\n" + event_type + b"\\n" + value

The event type (``politie.woninginbraak``) names the source and the ingress topic without
the deployment's topic prefix, so a signed record cannot be replayed onto another source's
topic or another type's, and the same signature holds for `ingest` of a file and on Kafka.
It travels

- on Kafka, in the record header ``cb-sig`` (the 64 signature bytes, or their base64);
- for `ingest FILE`, in a detached signature file (``--signatures FILE.sig``): line N holds
  the base64 signature of input line N (its bytes without the surrounding whitespace, as
  ingest reads it); blank lines stand for blank input lines.

`covenant-broker source keygen` and `source sign` make keys and signature files.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from broker.errors import ConfigError, InputError, InvalidEvent
from broker.keys import create_private, read_private
from broker.pipeline.ingest import source_of, split_lines

SIGNATURE_HEADER = "cb-sig"
DOMAIN = b"covenant-broker/source-signature/v1\n"
SIGNATURE_BYTES = 64


def signed_message(event_type: str, value: bytes) -> bytes:
    return DOMAIN + event_type.encode("utf-8") + b"\n" + value


def sign(key: Ed25519PrivateKey, event_type: str, value: bytes) -> bytes:
    return key.sign(signed_message(event_type, value))


def decode_signature(raw: bytes | None) -> bytes | None:
    """64 raw bytes, or their base64 (padded or not); None if absent or neither."""
    if raw is None:
        return None
    if len(raw) == SIGNATURE_BYTES:
        return raw
    text = raw.strip()
    try:
        decoded = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    return decoded if len(decoded) == SIGNATURE_BYTES else None


def load_public_key(path: Path, where: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"{where}: {path}: cannot be read: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(f"{where}: {path}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{where}: {path}: not an Ed25519 public key ({type(key).__name__})")
    return key


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(read_private(path), password=None)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read: {exc.strerror}") from None
    except (ValueError, TypeError):
        raise InputError(f"{path}: not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError(f"{path}: not an Ed25519 private key")
    return key


def keygen(stem: Path) -> tuple[Path, Path]:
    """STEM.key (private, PKCS#8 PEM, mode 0600) and STEM.pub (public PEM)."""
    key = Ed25519PrivateKey.generate()
    private, public = stem.with_name(stem.name + ".key"), stem.with_name(stem.name + ".pub")
    for path in (private, public):
        if path.exists():
            raise InputError(f"{path}: exists; not overwriting a key")
    private.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    if not create_private(private, pem):  # 0600 from the start, written whole or not at all
        raise InputError(f"{private}: exists; not overwriting a key")
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def write_signature_file(key: Ed25519PrivateKey, event_type: str, data: bytes,
                         out: Path) -> int:
    """The detached signature file of JSON-lines `data` (what `read_signature_file` reads):
    line N the base64 signature of input line N as ingest splits it, blank for a blank
    line, so the line numbers stay aligned. Returns how many lines were signed."""
    signed = dict(split_lines(data))
    total = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    try:
        out.write_bytes(b"".join(
            base64.b64encode(sign(key, event_type, signed[n])) + b"\n" if n in signed
            else b"\n"
            for n in range(1, total + 1)))
    except OSError as exc:
        raise InputError(f"{out}: cannot be written: {exc.strerror}") from None
    return len(signed)


def read_signature_file(path: Path) -> dict[int, bytes]:
    """Line number -> the signature bytes (as written: base64) of a detached file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot be read: {exc.strerror}") from None
    return {n: line.strip() for n, line in enumerate(data.split(b"\n"), start=1) if line.strip()}


class SourceKeys:
    """The configured public keys of the sources, and the check at ingest."""

    def __init__(self, keys: Mapping[str, Ed25519PublicKey], event_types: Iterable[str]) -> None:
        self.keys = dict(keys)
        self.event_types = sorted(event_types)

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def check(self, source: str, event_type: str, value: bytes, signature: bytes | None) -> None:
        """Raise InvalidEvent unless `value` is acceptable from `source` as `event_type`."""
        key = self.keys.get(source)
        if key is None and (signature is None or not self.keys):
            return  # an unchecked source
        sig = decode_signature(signature)
        if key is not None and signature is None:
            raise InvalidEvent(
                "signature_missing",
                f"source {source} signs its input and "
                f"this one carries no signature ({SIGNATURE_HEADER})",
            )
        if sig is None:
            if key is None:
                return  # not a signature of any source; this source is not checked
            raise InvalidEvent(
                "signature_invalid", f"the signature is not {SIGNATURE_BYTES} bytes (raw or base64)"
            )
        if key is not None and _verifies(key, sig, signed_message(event_type, value)):
            return
        signer = self._signer(sig, value, event_type)
        if signer is not None and signer[0] != source:
            raise InvalidEvent(
                "wrong_source",
                f"signed by source {signer[0]} (for "
                f"{signer[1]}), not by {source}, whose type {event_type} is",
            )
        if key is None:
            return
        if signer is not None:
            raise InvalidEvent(
                "signature_invalid", f"signed by {source} for {signer[1]}, not for {event_type}"
            )
        raise InvalidEvent(
            "signature_invalid", f"the signature does not verify under the key of source {source}"
        )

    def _signer(self, sig: bytes, value: bytes, event_type: str) -> tuple[str, str] | None:
        """(source, event type) whose key signed `value` for that type: the failure path
        only, so trying every configured key and type costs nothing on good input."""
        for name, key in sorted(self.keys.items()):
            types = [
                event_type,
                *(t for t in self.event_types if source_of(t) == name and t != event_type),
            ]
            for candidate in types:
                if _verifies(key, sig, signed_message(candidate, value)):
                    return name, candidate
        return None


def _verifies(key: Ed25519PublicKey, sig: bytes, message: bytes) -> bool:
    try:
        key.verify(sig, message)
    except InvalidSignature:
        return False
    return True


def load_source_keys(
    public_keys: Mapping[str, Path | None], sources: Iterable[str], event_types: Iterable[str]
) -> SourceKeys:
    """The `sources:` section of the config: each name must be a source of the covenant."""
    known = set(sources)
    problems = [
        f"sources.{name}: not a source of the covenant (its sources: {', '.join(sorted(known))})"
        for name in public_keys
        if name not in known
    ]
    if problems:
        raise ConfigError("\n".join(problems))
    return SourceKeys(
        {
            name: load_public_key(path, f"sources.{name}.public_key")
            for name, path in public_keys.items()
            if path is not None
        },
        event_types,
    )
