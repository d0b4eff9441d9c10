"""Confidential purposes: their entries stay out of subject reports until a four-eyes lift.

A purpose the covenant marks `confidential: true` (a running criminal investigation under
the Wpg, say) is restricted per covenant version: a subject report leaves out every entry
under that purpose and version, and says that a restriction applies without saying which
purpose or how many entries (broker/audit/subject_report.py). A lift ends the restriction
for one purpose and covenant version, as covenant activation is approved: by two distinct
people. One proposes, another approves; each step is a control event with its audit entry,
and the approval's audit entry (`control`, detail kind `confidential_lift`) is the lift the
reports apply, so a lift counts only once it is in the audit log, and an auditor with the
log re-derives the same restriction (`audit verify-report --against-log`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from broker.app.service import Broker
from broker.audit.entries import draft
from broker.audit.subject_report import LIFT_KIND, LIFT_PROPOSAL_KIND
from broker.clock import to_millis
from broker.errors import PolicyError
from broker.policy.control import ControlEvent

PROPOSAL, APPROVAL = "lift_proposal", "lift_approval"  # control event kinds


@dataclass(frozen=True)
class LiftState:
    """The four-eyes state of one (purpose, covenant version)."""

    proposed_by: str | None = None  # an open proposal's author
    approvers: tuple[str, ...] = ()  # set once lifted: proposer and approver

    @property
    def lifted(self) -> bool:
        return bool(self.approvers)


def known_versions(broker: Broker) -> list[int]:
    versions = {a.version for a in broker.control_state().activations}
    versions.add(broker.covenant.covenant.version)
    return sorted(versions)


def confidential_pairs(broker: Broker) -> frozenset[tuple[str, int]]:
    """(purpose, covenant version) for every purpose a known covenant version marks
    confidential: the restrictions before any lift."""
    out: set[tuple[str, int]] = set()
    for version in known_versions(broker):
        covenant, _ = broker.covenant_version(version)
        out.update((name, version) for name, purpose in covenant.purposes.items()
                   if purpose.confidential)
    return frozenset(out)


def lift_states(broker: Broker) -> dict[tuple[str, int], LiftState]:
    """The fold of the lift control events, in the order they were recorded."""
    states: dict[tuple[str, int], LiftState] = {}
    for event in broker.log.control_events():
        if event.kind not in (PROPOSAL, APPROVAL):
            continue
        data = json.loads(event.value)
        key = (event.name, int(data["covenant_version"]))
        state = states.get(key, LiftState())
        if event.kind == PROPOSAL:
            states[key] = LiftState(proposed_by=str(data["by"]))
        elif state.proposed_by is not None:
            states[key] = LiftState(approvers=(state.proposed_by, str(data["by"])))
    return states


def _checked(broker: Broker, purpose: str, version: int, by: str) -> tuple[str, LiftState]:
    name = by.strip()
    if not name:
        raise PolicyError("a lift names the person who proposes or approves it")
    if (purpose, version) not in confidential_pairs(broker):
        raise PolicyError(f"purpose {purpose!r} is not confidential under covenant version "
                          f"{version}: there is no restriction to lift")
    state = lift_states(broker).get((purpose, version), LiftState())
    if state.lifted:
        raise PolicyError(f"the restriction on {purpose!r} (covenant version {version}) was "
                          f"lifted already, by {' and '.join(state.approvers)}")
    return name, state


def _append(broker: Broker, kind: str, purpose: str, version: int, by: str, now: datetime,
            detail: dict[str, str]) -> None:
    now_ms = to_millis(now)
    value = json.dumps({"covenant_version": version, "by": by})
    audit = draft("control", trace_id=None, start_ms=now_ms, purpose=purpose,
                  covenant_id=broker.covenant.covenant.id, covenant_version=version,
                  detail=detail)
    broker.log.append_control(ControlEvent(kind, purpose, value, now_ms, now_ms), audit)


def propose_lift(broker: Broker, purpose: str, version: int, by: str, now: datetime) -> None:
    """The first pair of eyes: propose lifting the restriction on one purpose and version."""
    with broker.exclusive():  # the state read and the write, one lift step at a time
        name, state = _checked(broker, purpose, version, by)
        if state.proposed_by is not None:
            raise PolicyError(f"{state.proposed_by} proposed this lift already; another "
                              "person approves it (`policy lift approve`)")
        _append(broker, PROPOSAL, purpose, version, name, now,
                {"kind": LIFT_PROPOSAL_KIND, "by": name})


def approve_lift(broker: Broker, purpose: str, version: int, by: str, now: datetime
                 ) -> tuple[str, str]:
    """The second pair of eyes: approve an open proposal, which lifts the restriction.
    Returns (proposer, approver)."""
    with broker.exclusive():  # the state read and the write, one lift step at a time
        name, state = _checked(broker, purpose, version, by)
        if state.proposed_by is None:
            raise PolicyError(f"no open proposal to lift the restriction on {purpose!r} "
                              f"(covenant version {version}); propose it first "
                              "(`policy lift propose`)")
        if state.proposed_by.casefold() == name.casefold():
            raise PolicyError(f"four eyes: {name} proposed this lift and cannot also "
                              "approve it; another person approves")
        _append(broker, APPROVAL, purpose, version, name, now,
                {"kind": LIFT_KIND, "approvers": f"{state.proposed_by}, {name}"})
        return state.proposed_by, name
