"""The subject access report (AVG art. 15): every disclosure about one person, with proofs.

The person is found through the subject index (keyed pseudonym -> seqs), never by a scan,
and never by the identifier itself: the caller pseudonymises the BSN with the subject key
first, and nothing here sees it. Each entry the index names is decoded and kept only if it
really names the pseudonym, then sorted into:
  disclosures  decisions that released data, and the tombstones of released data
               (expiry tombstones, erasure notices, retractions of corrected or
               withdrawn events)
  withheld     decisions that did not release (with the reason)
  accesses     a recipient retrieving records about the person
  other        anything else naming the person (an erasure, for example)
Each item carries its inclusion proof against the latest signed checkpoint, so the report
can be checked offline (`verify_subject_report`). The proof holds the entry's exact bytes,
except when the entry also names other persons (a victim and a suspect of one event):
then it holds only the leaf hash, so no other person's pseudonym is in the report.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any

from broker.audit.bundles import BundleError, inclusion_item
from broker.audit.checkpoint import (
    VerifierKey,
    check_inclusion,
    open_checkpoint,
    parse_verifier_key,
)
from broker.audit.merkle import EMPTY_ROOT, VerificationError, leaf_hash
from broker.audit.store import AuditStore
from broker.model.render import to_json
from broker.model.schemas import Schema

REPORT_FORMAT = "covenant-broker/subject-report/v1"
SECTIONS = ("disclosures", "withheld", "accesses", "other")
_PSEUDONYM = re.compile(r"[0-9a-f]{32}")


def valid_pseudonym(text: str) -> bool:
    return bool(_PSEUDONYM.fullmatch(text))


def section_of(entry: dict[str, Any]) -> str:
    decision = entry.get("decision")
    if decision in ("release", "expire", "erase", "retract"):
        return "disclosures"
    if decision == "withhold":
        return "withheld"
    if entry.get("name") == "access":
        return "accesses"
    return "other"


def _item(entry: dict[str, Any], roles: list[str], describe: Mapping[str, str]
          ) -> dict[str, Any]:
    recipient, purpose = entry.get("recipient"), entry.get("purpose")
    return {
        "seq": entry["seq"],
        "action": entry["name"],
        "decision": entry.get("decision"),
        "time": entry["start_time"],
        "logged_at": entry["logged_at"],
        "recipient": recipient,
        "recipient_description": describe.get(f"recipient:{recipient}") if recipient else None,
        "purpose": purpose,
        "purpose_description": describe.get(f"purpose:{purpose}") if purpose else None,
        "legal_basis": entry.get("legal_basis"),
        "covenant_id": entry.get("covenant_id"),
        "covenant_version": entry.get("covenant_version"),
        "fields_released": entry.get("fields_released") or [],
        "fields_withheld": entry.get("fields_withheld") or [],
        "reason_code": entry.get("reason_code"),
        "reason": entry.get("reason"),
        "roles": roles,
        "event_type": entry.get("event_type"),
        "event_id": entry.get("event_id"),
        "policy_hash": entry.get("policy_hash"),
    }


def subject_report(store: AuditStore, schema: Schema, *, pseudonym: str, id_type: str,
                   origin: str, verifier_key: str, generated_at: str,
                   describe: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The report as a JSON-ready dict; `describe` maps "recipient:x"/"purpose:y" to text."""
    if not valid_pseudonym(pseudonym):
        raise ValueError("a subject pseudonym is 32 lowercase hex digits")
    describe = describe or {}
    latest = store.latest_checkpoint()
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "subject": {"id_type": id_type, "pseudonym": pseudonym},
        "generated_at": generated_at,
        "origin": origin,
        "verifier_key": verifier_key,
        "checkpoint": latest.note if latest else None,
        "tree_size": latest.size if latest else 0,
        # What the report is complete up to, for an auditor with the log to re-derive it.
        "complete_up_to": {
            "size": latest.size if latest else 0,
            "root": (open_checkpoint(latest.note, parse_verifier_key(verifier_key), origin)
                     .root.hex() if latest else EMPTY_ROOT.hex())},
        **{section: [] for section in SECTIONS},
    }
    unsigned = 0
    seqs = store.subject_seqs(bytes.fromhex(pseudonym))
    for seq, data in store.audit_entries_at(seqs):
        entry = to_json(schema.decode(data))
        roles = [s["role"] for s in entry.get("data_subjects") or ()
                 if s["pseudonym"] == pseudonym]
        if not roles:
            continue  # the index named an entry that does not name the person: not theirs
        item = _item(entry, roles, describe)
        if latest is not None and seq < latest.size:
            item["proof"] = inclusion_item(store, seq, data, latest)
            if any(s["pseudonym"] != pseudonym for s in entry.get("data_subjects") or ()):
                # The entry names other persons too: their pseudonyms stay out of this
                # report. The leaf hash still proves the entry is in the signed log.
                del item["proof"]["entry_base64"]
                item["proof"]["leaf_hash"] = base64.b64encode(leaf_hash(data)).decode()
        else:
            item["proof"] = None
            unsigned += 1
        report[section_of(entry)].append(item)
    report["summary"] = {**{section: len(report[section]) for section in SECTIONS},
                         "not_yet_signed": unsigned}
    return report


def verify_subject_report(report: Any, verifier: VerifierKey, origin: str) -> int:
    """Check every item's proof against the report's signed checkpoint; count the proven.

    Raises BundleError naming the first item that does not verify.
    """
    if not isinstance(report, dict) or report.get("format") != REPORT_FORMAT:
        raise BundleError("not a subject report")
    note = report.get("checkpoint")
    if not isinstance(note, str):
        raise BundleError("the report carries no signed checkpoint")
    try:
        checkpoint = open_checkpoint(note, verifier, origin)
    except VerificationError as exc:
        raise BundleError(f"checkpoint: {exc}") from None
    proven = 0
    for section in SECTIONS:
        for item in report.get(section) or []:
            proof = item.get("proof")
            if proof is None:
                continue
            where = f"{section} item {item.get('seq')}"
            try:
                if "entry_base64" in proof:
                    leaf = leaf_hash(base64.b64decode(proof["entry_base64"], validate=True))
                else:
                    leaf = base64.b64decode(proof["leaf_hash"], validate=True)
                hashes = [base64.b64decode(h, validate=True) for h in proof["inclusion_proof"]]
                if proof["log_index"] != item.get("seq") or proof["tree_size"] != checkpoint.size:
                    raise BundleError(f"{where}: the proof is for entry {proof['log_index']} "
                                      f"in a tree of size {proof['tree_size']}")
                check_inclusion(checkpoint, leaf, proof["log_index"], hashes)
            except (KeyError, TypeError, ValueError, VerificationError) as exc:
                raise BundleError(f"{where}: not proven: {exc}") from None
            proven += 1
    return proven
