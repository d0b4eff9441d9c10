"""Self-contained proof bundles an auditor checks offline, with only the pinned public key.

An inclusion bundle holds one entry (its exact stored bytes, base64, and the same entry
decoded for people), its RFC 9162 inclusion proof and the signed checkpoint the proof is
against. A consistency bundle holds two signed checkpoints and the consistency proof
between them. The verifiers take size and root only from a checkpoint that opened under
the pinned key and origin (never from the bundle's own fields), and every failure raises
`BundleError` with a message naming the part that is wrong.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from broker.audit.checkpoint import (
    Checkpoint,
    VerifierKey,
    check_consistent,
    check_inclusion,
    open_checkpoint,
)
from broker.audit.merkle import VerificationError, leaf_hash
from broker.audit.store import AuditStore, StoredCheckpoint
from broker.audit.tree import consistency_proof_at, inclusion_proof_at
from broker.model.render import to_json
from broker.model.schemas import Schema

INCLUSION_FORMAT = "covenant-broker/audit-inclusion-proof/v1"
CONSISTENCY_FORMAT = "covenant-broker/audit-consistency-proof/v1"


class BundleError(VerificationError):
    """A proof bundle is malformed or does not verify; the message says which part."""


class ProofUnavailableError(ValueError):
    """The log cannot prove what was asked (no such entry, or no checkpoint covers it)."""


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def inclusion_item(store: AuditStore, index: int, data: bytes,
                   checkpoint: StoredCheckpoint) -> dict[str, Any]:
    """The proof part of a bundle (also what each subject report item carries)."""
    return {
        "log_index": index,
        "tree_size": checkpoint.size,
        "entry_base64": _b64(data),
        "inclusion_proof": [_b64(h) for h in inclusion_proof_at(store.tree_node, index,
                                                                  checkpoint.size)],
    }


def covering_checkpoint(store: AuditStore, index: int) -> StoredCheckpoint:
    """The latest checkpoint, which must cover entry `index`."""
    size = store.audit_size()
    if not 0 <= index < size:
        span = f"0..{size - 1}" if size else "it is empty"
        raise ProofUnavailableError(f"entry {index} does not exist; the log has {size} "
                                    f"entries ({span})")
    latest = store.latest_checkpoint()
    if latest is None or latest.size <= index:
        signed = latest.size if latest else 0
        raise ProofUnavailableError(f"entry {index} is not yet covered by a signed checkpoint "
                                    f"(the latest covers {signed} entries); the next write "
                                    "or shutdown signs one")
    return latest


def inclusion_bundle(store: AuditStore, schema: Schema, origin: str, index: int
                     ) -> dict[str, Any]:
    checkpoint = covering_checkpoint(store, index)
    found = store.audit_entries_at([index])
    if not found:
        raise ProofUnavailableError(f"entry {index} is missing from the store")
    data = found[0][1]
    item = inclusion_item(store, index, data, checkpoint)
    return {"format": INCLUSION_FORMAT, "origin": origin, **item,
            "entry": to_json(schema.decode(data)), "checkpoint": checkpoint.note}


def consistency_bundle(store: AuditStore, origin: str, old_size: int, new_size: int
                       ) -> dict[str, Any]:
    if old_size > new_size:
        raise ProofUnavailableError(f"old size {old_size} is larger than new size {new_size}")
    notes = []
    for size in (old_size, new_size):
        stored = store.checkpoint_at(size)
        if stored is None:
            sizes = [cp.size for cp in store.checkpoints()]
            near = sorted(sizes, key=lambda s: abs(s - size))[:5]
            raise ProofUnavailableError(
                f"no signed checkpoint at size {size}; checkpoints exist at sizes "
                f"{', '.join(map(str, sorted(near))) or 'none'}"
                + (" (and others)" if len(sizes) > len(near) else ""))
        notes.append(stored.note)
    proof = consistency_proof_at(store.tree_node, old_size, new_size)
    return {"format": CONSISTENCY_FORMAT, "origin": origin,
            "old": {"tree_size": old_size, "checkpoint": notes[0]},
            "new": {"tree_size": new_size, "checkpoint": notes[1]},
            "consistency_proof": [_b64(h) for h in proof]}


# -- offline verification ------------------------------------------------------------------

def _field(obj: Any, name: str, kind: type, where: str = "bundle") -> Any:
    if not isinstance(obj, dict):
        raise BundleError(f"{where} must be a JSON object")
    if name not in obj:
        raise BundleError(f"{where} has no field {name!r}")
    value = obj[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BundleError(f"{where}.{name} must be a {kind.__name__}")
    return value


def _only(obj: Any, keys: set[str], where: str = "bundle") -> None:
    if not isinstance(obj, dict):
        raise BundleError(f"{where} must be a JSON object")
    unknown = sorted(set(obj) - keys)
    if unknown:
        raise BundleError(f"{where} has unknown fields: {', '.join(unknown)}")


_INCLUSION_KEYS = {"format", "origin", "log_index", "tree_size", "entry_base64",
                   "inclusion_proof", "entry", "checkpoint"}
_CONSISTENCY_KEYS = {"format", "origin", "old", "new", "consistency_proof"}


def _decode_b64(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, binascii.Error):
        raise BundleError(f"{what} is not valid base64") from None
    if _b64(raw) != text:  # one encoding per value: an edited bundle never passes as equal
        raise BundleError(f"{what} is not canonical base64")
    return raw


def _hashes(value: Any, what: str) -> list[bytes]:
    if not isinstance(value, list):
        raise BundleError(f"{what} must be a list of base64 hashes")
    out = []
    for position, text in enumerate(value):
        if not isinstance(text, str):
            raise BundleError(f"{what}[{position}] must be a base64 string")
        raw = _decode_b64(text, f"{what}[{position}]")
        if len(raw) != 32:
            raise BundleError(f"{what}[{position}] is {len(raw)} bytes, a hash is 32")
        out.append(raw)
    return out


def _open(note: str, verifier: VerifierKey, origin: str, what: str) -> Checkpoint:
    try:
        return open_checkpoint(note, verifier, origin)
    except VerificationError as exc:
        raise BundleError(f"{what}: {exc}") from None


def _check_origin(bundle: dict[str, Any], origin: str) -> None:
    """The bundle's own origin field is informative only, but it must not contradict."""
    if _field(bundle, "origin", str) != origin:
        raise BundleError(f"bundle names origin {bundle['origin']!r}, the pinned origin is "
                          f"{origin!r}")


def load_bundle(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise BundleError(f"not a JSON bundle: {exc}") from None


@dataclass(frozen=True)
class InclusionResult:
    index: int
    checkpoint: Checkpoint
    entry: dict[str, Any] | None  # decoded from the verified bytes, when a schema was given


def verify_inclusion_bundle(bundle: Any, verifier: VerifierKey, origin: str,
                            schema: Schema | None = None) -> InclusionResult:
    """Check an inclusion bundle offline; raises BundleError naming the first problem."""
    if _field(bundle, "format", str) != INCLUSION_FORMAT:
        raise BundleError(f"not an inclusion proof bundle (format {bundle['format']!r})")
    _only(bundle, _INCLUSION_KEYS)
    checkpoint = _open(_field(bundle, "checkpoint", str), verifier, origin, "checkpoint")
    _check_origin(bundle, origin)
    index = _field(bundle, "log_index", int)
    claimed_size = _field(bundle, "tree_size", int)
    if claimed_size != checkpoint.size:
        raise BundleError(f"tree_size {claimed_size} is not the signed checkpoint's size "
                          f"{checkpoint.size}")
    data = _decode_b64(_field(bundle, "entry_base64", str), "entry_base64")
    proof = _hashes(_field(bundle, "inclusion_proof", list), "inclusion_proof")
    try:
        check_inclusion(checkpoint, leaf_hash(data), index, proof)
    except VerificationError as exc:
        raise BundleError(f"entry {index} is not proven in the signed tree of size "
                          f"{checkpoint.size}: {exc}") from None
    entry = None
    if schema is not None:
        try:
            entry = to_json(schema.decode(data))
        except Exception as exc:  # noqa: BLE001 - a signed but unreadable entry is a finding
            raise BundleError(f"entry {index}: the proven bytes do not decode as an audit "
                              f"entry ({type(exc).__name__})") from None
        if entry.get("seq") != index:
            raise BundleError(f"entry bytes carry seq {entry.get('seq')}, the bundle claims "
                              f"index {index}")
        if _field(bundle, "entry", dict) != entry:
            raise BundleError(f"entry {index}: the decoded entry in the bundle differs from "
                              "the proven bytes (it was edited)")
    return InclusionResult(index, checkpoint, entry)


@dataclass(frozen=True)
class ConsistencyResult:
    old: Checkpoint
    new: Checkpoint


def verify_consistency_bundle(bundle: Any, verifier: VerifierKey, origin: str
                              ) -> ConsistencyResult:
    """Check a consistency bundle offline; raises BundleError naming the first problem."""
    if _field(bundle, "format", str) != CONSISTENCY_FORMAT:
        raise BundleError(f"not a consistency proof bundle (format {bundle['format']!r})")
    _only(bundle, _CONSISTENCY_KEYS)
    opened = []
    for part in ("old", "new"):
        section = _field(bundle, part, dict)
        _only(section, {"tree_size", "checkpoint"}, part)
        cp = _open(_field(section, "checkpoint", str, part), verifier, origin,
                   f"{part} checkpoint")
        claimed = _field(section, "tree_size", int, part)
        if claimed != cp.size:
            raise BundleError(f"{part}.tree_size {claimed} is not its signed checkpoint's "
                              f"size {cp.size}")
        opened.append(cp)
    old, new = opened
    _check_origin(bundle, origin)
    proof = _hashes(_field(bundle, "consistency_proof", list), "consistency_proof")
    try:
        check_consistent(old, new, proof)
    except VerificationError as exc:
        raise BundleError(f"checkpoint at size {new.size} is not an extension of the "
                          f"checkpoint at size {old.size}: {exc}") from None
    return ConsistencyResult(old, new)
