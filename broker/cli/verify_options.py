"""The options of `audit verify`, shared by both backends' verify (broker/cli/audit.py,
broker/cli/kafka_ops.py): declared once, parsed once into the audit service's use case."""

from __future__ import annotations

import argparse
from pathlib import Path

from broker.audit.checkpoint import pinned_verifier_key, trusted_checkpoint_note
from broker.audit.service import AuditLog
from broker.audit.verify import Verdict
from broker.errors import InputError


def add_verify_options(verify: argparse.ArgumentParser) -> None:
    verify.add_argument("--public-key", metavar="K", help="verify against this pinned key "
                        "instead of the log's own")
    verify.add_argument("--origin", help="the pinned log origin (default: the key name)")
    verify.add_argument("--trusted-checkpoint", type=Path, action="append", default=[],
                        metavar="FILE", help="a signed checkpoint kept from before; the log "
                        "must still match it (repeatable)")
    verify.add_argument("--require-signed", action="store_true",
                        help="fail when entries after the last checkpoint are not signed")


def read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the {what}: {exc}") from None


def verify_pinned(args: argparse.Namespace, audit: AuditLog) -> Verdict:
    """The verify options parsed (a bad key or checkpoint file: TrustAnchorError, exit 2),
    and the audit service's `verify_pinned` called with them."""
    verifier = (pinned_verifier_key(args.public_key, args.origin)
                if args.public_key else None)
    notes = [trusted_checkpoint_note(read_text(path, "trusted checkpoint"),
                                     f"--trusted-checkpoint {path}")
             for path in args.trusted_checkpoint]
    return audit.verify_pinned(verifier, args.origin, notes, args.require_signed)
