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
Entries under a confidential purpose (a running criminal investigation, say) are left out
until a four-eyes lift for that purpose and covenant version is in the log
(broker/app/confidential.py). The report says whether a restriction applies, never which
purpose nor how many entries: `applies` depends on the covenant and the lifts only, not on
the person, so its presence tells nothing about them. It states the rule and the log size
whose lift entries it applied, so an auditor with the log re-derives the same report
(`report_difference`). The FG's own view (`reveal_restricted`) keeps such entries, marked.
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
from broker.audit.store import AuditStore, QueryFilter
from broker.model.render import to_json
from broker.model.schemas import Schema

REPORT_FORMAT = "covenant-broker/subject-report/v1"
SECTIONS = ("disclosures", "withheld", "accesses", "other")
_PSEUDONYM = re.compile(r"[0-9a-f]{32}")
# The audit detail kinds of the two steps of a lift; the approval is the lift itself.
LIFT_PROPOSAL_KIND = "confidential_lift_proposal"
LIFT_KIND = "confidential_lift"
RESTRICTION_RULE = ("an entry is left out when its purpose is confidential under its "
                    "covenant_version and no control entry of kind confidential_lift for that "
                    "purpose and version has a seq below lifts_up_to")
Pairs = frozenset[tuple[str, int]]


def lift_of(entry: Mapping[str, Any]) -> tuple[str, int] | None:
    """The (purpose, covenant version) a lift entry lifts; None for any other entry."""
    detail = entry.get("detail") or {}
    purpose, version = entry.get("purpose"), entry.get("covenant_version")
    if entry.get("name") != "control" or detail.get("kind") != LIFT_KIND or \
            purpose is None or version is None:
        return None
    return str(purpose), int(version)


def restricted_by(entry: Mapping[str, Any], restricted: Pairs) -> bool:
    purpose, version = entry.get("purpose"), entry.get("covenant_version")
    return purpose is not None and version is not None and \
        (str(purpose), int(version)) in restricted


def lifted_pairs(store: AuditStore, schema: Schema, up_to: int) -> set[tuple[str, int]]:
    """The lifts among the entries below seq `up_to`, through the index (control entries)."""
    out: set[tuple[str, int]] = set()
    for seq, data in store.query(QueryFilter(name="control")):
        if seq >= up_to:
            break
        lift = lift_of(to_json(schema.decode(data)))
        if lift is not None:
            out.add(lift)
    return out


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
                   describe: Mapping[str, str] | None = None, confidential: Pairs = frozenset(),
                   reveal_restricted: bool = False) -> dict[str, Any]:
    """The report as a JSON-ready dict; `describe` maps "recipient:x"/"purpose:y" to text.

    `confidential` is (purpose, covenant version) of every confidential purpose; those not
    lifted in the log are left out, or with `reveal_restricted` (the FG's view) kept and
    marked `restricted`.
    """
    if not valid_pseudonym(pseudonym):
        raise ValueError("a subject pseudonym is 32 lowercase hex digits")
    describe = describe or {}
    lifts_up_to = store.audit_size()
    restricted = frozenset(confidential - lifted_pairs(store, schema, lifts_up_to))
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
        # Whether entries may be left out, and by which rule: the same for every person.
        "restriction": {"applies": bool(restricted), "rule": RESTRICTION_RULE,
                        "lifts_up_to": lifts_up_to, "revealed": reveal_restricted},
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
        hidden = restricted_by(entry, restricted)
        if hidden and not reveal_restricted:
            continue  # a restriction applies: left out, and not counted anywhere
        item = _item(entry, roles, describe)
        if hidden:
            item["restricted"] = True
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
