"""The verifiable audit log assembled: signing key, sequencer, and the reading features.

`audit_setup` makes what a backend's sequencer needs (origin, Ed25519 checkpoint signer,
intervals from the settings); `AuditLog` offers what privacy officers and auditors use,
over any backend's `AuditStore`: verify, proof bundles, query, and the subject report.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from broker.audit.bundles import consistency_bundle, inclusion_bundle
from broker.audit.checkpoint import (
    Checkpoint,
    CheckpointSigner,
    VerifierKey,
    export_public_key_pem,
    open_checkpoint,
    parse_verifier_key,
)
from broker.audit.merkle import VerificationError
from broker.audit.sequencer import AuditSequencer
from broker.audit.store import AuditStore, QueryFilter
from broker.audit.subject_report import subject_report
from broker.audit.verify import AuditReport, Verdict, verdict, verify_log
from broker.config import Settings
from broker.errors import KeyFileError
from broker.keys import KeyStore, signing_key_from_pem
from broker.model.render import to_json
from broker.model.schemas import Schema


def default_origin(log_id: str | None, covenant_id: str) -> str:
    return log_id or f"covenant-broker/{covenant_id}"


def load_signer(keys: KeyStore, origin: str) -> CheckpointSigner:
    """The checkpoint signer; its key file (separate from the data keys) is kept like them:
    made once, 0600, recorded in the key manifest and refused when missing or replaced."""
    try:
        key = signing_key_from_pem(keys.signing_key_pem(), keys.signing_key_path)
    except ValueError as exc:  # the manifest's id check parses it first: a safeguard
        raise KeyFileError(str(exc)) from None
    return CheckpointSigner(key, origin)


@dataclass(frozen=True)
class AuditSetup:
    schema: Schema
    origin: str
    signer: CheckpointSigner
    sequencer: AuditSequencer

    def audit_log(self, store: AuditStore) -> AuditLog:
        return AuditLog(store, self.schema, self.origin, self.signer)


def audit_setup(settings: Settings, covenant_id: str, keys: KeyStore, schema: Schema
                ) -> AuditSetup:
    origin = default_origin(settings.audit_log_id, covenant_id)
    signer = load_signer(keys, origin)
    sequencer = AuditSequencer(schema, origin=origin, signer=signer,
                               every_entries=settings.audit_checkpoint_every_entries,
                               every_seconds=settings.audit_checkpoint_every_seconds)
    return AuditSetup(schema, origin, signer, sequencer)


class AuditLog:
    def __init__(self, store: AuditStore, schema: Schema, origin: str,
                 signer: CheckpointSigner) -> None:
        self.store = store
        self.schema = schema
        self.origin = origin
        self.signer = signer

    # -- the key auditors pin -----------------------------------------------------------------
    def verifier_key(self) -> str:
        return self.signer.verifier_key()

    def public_key_pem(self) -> str:
        return export_public_key_pem(self.signer.public_key).decode("ascii")

    # -- verification -----------------------------------------------------------------------
    def verify(self, verifier_key: str | None = None, origin: str | None = None,
               trusted_notes: Sequence[str] = ()) -> AuditReport:
        """Verify the whole log, against a pinned key and origin when given (else our own)."""
        verifier = parse_verifier_key(verifier_key or self.verifier_key())
        return self._verify(verifier, origin or verifier.name, trusted_notes)

    def verify_pinned(self, verifier: VerifierKey | None, origin: str | None,
                      trusted_notes: Sequence[str], require_signed: bool) -> Verdict:
        """`audit verify`: against the pinned key (else our own) and the kept checkpoints;
        with `require_signed`, entries no signed checkpoint covers yet fail it."""
        verifier = verifier or parse_verifier_key(self.verifier_key())
        report = self._verify(verifier, origin or verifier.name, trusted_notes)
        return verdict(report, require_signed)

    def _verify(self, verifier: VerifierKey, origin: str, trusted_notes: Sequence[str]
                ) -> AuditReport:
        trusted: list[Checkpoint] = []
        for number, note in enumerate(trusted_notes, start=1):
            try:
                trusted.append(open_checkpoint(note, verifier, origin))
            except VerificationError as exc:
                return AuditReport(0, "", "", 0, 0, f"trusted checkpoint {number}: {exc}")
        return verify_log(self.store, self.schema, verifier, origin, trusted)

    # -- bundles ----------------------------------------------------------------------------
    def prove(self, index: int) -> dict[str, Any]:
        return inclusion_bundle(self.store, self.schema, self.origin, index)

    def consistency(self, old_size: int, new_size: int | None) -> dict[str, Any]:
        if new_size is None:
            latest = self.store.latest_checkpoint()
            new_size = latest.size if latest else 0
        return consistency_bundle(self.store, self.origin, old_size, new_size)

    # -- privacy officer --------------------------------------------------------------------
    def query(self, where: QueryFilter, limit: int | None = None) -> Iterator[dict[str, Any]]:
        for _, data in self.store.query(where, limit):
            entry: dict[str, Any] = to_json(self.schema.decode(data))
            yield entry

    def subject_report(self, pseudonym: str, id_type: str, generated_at: str,
                       describe: Mapping[str, str] | None = None,
                       confidential: frozenset[tuple[str, int]] = frozenset(),
                       reveal_restricted: bool = False) -> dict[str, Any]:
        return subject_report(self.store, self.schema, pseudonym=pseudonym, id_type=id_type,
                              origin=self.origin, verifier_key=self.verifier_key(),
                              generated_at=generated_at, describe=describe,
                              confidential=confidential, reveal_restricted=reveal_restricted)
