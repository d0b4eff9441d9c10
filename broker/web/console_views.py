"""What the console pages show, shaped for the templates: plain dicts and strings in Dutch.

Nothing here reads a request or writes anything; the covenant overview is a pure function
of a covenant, its event schemas and the control state, and an audit page only reads.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from broker.audit.service import AuditLog
from broker.audit.store import QueryFilter
from broker.errors import SchemaError
from broker.model.render import to_json
from broker.model.schemas import SchemaRegistry
from broker.policy.control import ControlState
from broker.policy.covenant import (
    CelCondition,
    Covenant,
    FieldCondition,
    FieldRule,
    MaxAgeCondition,
    Purpose,
    ThemeCondition,
    ValidBetweenCondition,
)

TRANSFORMS_NL = {
    "keep": "ongewijzigd",
    "hour": "afgerond op het uur",
    "day": "alleen de datum",
    "year": "alleen het jaar",
    "postcode4": "alleen de 4 cijfers van de postcode",
    "pseudonymise": "schuilnaam (sleutel per doel, niet terug te rekenen)",
    "mask": "gemaskeerd",
}
DECISIONS_NL = {"release": "verstrekt", "withhold": "niet verstrekt",
                "expire": "vervallen (vervalmelding)", "refused": "geweigerd",
                "retract": "ingetrokken (gecorrigeerd of teruggetrokken door de bron)",
                "correct": "gecorrigeerd door de bron", "withdraw": "teruggetrokken door de bron",
                "destroy_keys": "sleutels vernietigd"}
ACTIONS_NL = {"decide": "besluit", "tombstone": "vervalmelding", "access": "opgehaald",
              "quarantine": "geweigerde invoer", "control": "beheerhandeling",
              "erasure": "verwijdering", "retention": "bewaartermijn", "replay": "herberekening",
              "ack": "ontvangst bevestigd", "subject_report": "inzageverzoek",
              "broker_start": "broker gestart", "broker_stop": "broker gestopt",
              "write_refused": "schrijven geweigerd (Kafka)", "login": "FG-aanmelding",
              "logout": "FG-afmelding", "audit_search": "auditlog doorzocht",
              "verify": "verificatie uitgevoerd", "impact": "effect van voorstel berekend",
              "correction": "correctie door de bron", "withdrawal": "intrekking door de bron"}
_MONTHS = ["jan", "feb", "mrt", "apr", "mei", "jun", "jul", "aug", "sep", "okt", "nov", "dec"]


def when(iso: str | None, zone: ZoneInfo) -> str:
    """An ISO-8601 instant as local time for people: `10 mei 2026 14:00`."""
    if not iso:
        return "—"
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(zone)
    return (f"{moment.day} {_MONTHS[moment.month - 1]} {moment.year} "
            f"{moment.hour:02d}:{moment.minute:02d}")


def age_text(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} seconden"
    if seconds < 7200:
        return f"{seconds // 60} minuten"
    if seconds < 172_800:
        return f"{seconds // 3600} uur"
    return f"{seconds // 86_400} dagen"


def transform_text(rule: FieldRule) -> str:
    text = TRANSFORMS_NL.get(rule.transform, rule.transform)
    if rule.transform == "mask" and rule.keep_last:
        text += f" (laatste {rule.keep_last} tekens zichtbaar)"
    return text


def _value(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, bool):
        return "waar" if value else "onwaar"
    return str(value)


def condition_text(cond: Any) -> str:
    if isinstance(cond, FieldCondition):
        case = " (hoofdletters tellen niet)" if cond.ignore_case else ""
        if cond.equals_recipient is not None:
            return f"{cond.field} is gelijk aan '{cond.equals_recipient}' van de ontvanger"
        if cond.contains_recipient is not None:
            return f"{cond.field} bevat '{cond.contains_recipient}' van de ontvanger"
        if cond.one_of is not None:
            return f"{cond.field} is een van: {_value(cond.one_of)}{case}"
        return f"{cond.field} is {_value(cond.equals)}{case}"
    if isinstance(cond, MaxAgeCondition):
        return f"niet ouder dan {cond.max_age.days} dagen (naar {cond.max_age.field})"
    if isinstance(cond, ValidBetweenCondition):
        return (f"alleen op besluitdata van {cond.valid_between.start} tot en met "
                f"{cond.valid_between.until}")
    if isinstance(cond, ThemeCondition):
        return f"alleen zolang het thema '{cond.theme}' aan staat"
    if isinstance(cond, CelCondition):
        return f"CEL-expressie: {cond.cel}"
    return str(cond)


def _released_sources(purpose: Purpose) -> list[str]:
    return [rule.source or name for name, rule in purpose.fields.items()]


def withheld_fields(purpose: Purpose, registry: SchemaRegistry) -> list[str]:
    """Leaf fields of the event type that no field rule of the purpose releases."""
    try:
        schema = registry.get(purpose.event_type)
    except SchemaError:  # a type without a schema: nothing to list
        return []
    sources = _released_sources(purpose)
    return [path for path in schema.leaf_paths
            if not any(path == s or path.startswith(s + ".") for s in sources)]


def _fields(purpose: Purpose) -> list[dict[str, str]]:
    return [{"name": name, "source": rule.source or name, "transform": transform_text(rule)}
            for name, rule in purpose.fields.items()]


@dataclass(frozen=True)
class ActiveVersion:
    version: int
    sha256: str
    since_ms: int | None  # None: the configured file, never activated on the control log
    approvers: tuple[str, ...]


def covenant_overview(covenant: Covenant, registry: SchemaRegistry, control: ControlState,
                      now_ms: int, active: ActiveVersion) -> dict[str, Any]:
    header = covenant.covenant
    purposes = []
    for name, purpose in covenant.purposes.items():
        purposes.append({
            "name": name, "description": purpose.description,
            "legal_basis": purpose.legal_basis, "retention_days": purpose.retention_days,
            "approved_by": [covenant.parties[p].name if p in covenant.parties else p
                            for p in purpose.approved_by],
            "event_type": purpose.event_type,
            "conditions": [condition_text(c) for c in purpose.conditions],
            "expires_after": purpose.expires_after,
            "recipients": [{"names": rule.to,
                            "conditions": [condition_text(c) for c in rule.conditions]}
                           for rule in purpose.recipients],
            "fields": _fields(purpose),
            "withheld": withheld_fields(purpose, registry),
        })
    recipients = []
    for name, recipient in covenant.recipients.items():
        party = covenant.parties.get(recipient.party)
        gets = []
        for pname, purpose in covenant.purposes.items():
            for rule in purpose.recipients:
                if name in rule.to:
                    gets.append({"purpose": pname, "event_type": purpose.event_type,
                                 "conditions": [condition_text(c) for c in
                                                [*purpose.conditions, *rule.conditions]],
                                 "fields": _fields(purpose)})
        recipients.append({"name": name, "party": party.name if party else recipient.party,
                           "description": recipient.description,
                           "attributes": recipient.attributes, "purposes": gets})
    return {
        "id": header.id, "title": header.title, "version": active.version,
        "sha256": active.sha256, "since_ms": active.since_ms, "approvers": active.approvers,
        "signed_on": header.signed_on, "valid_from": header.valid_from,
        "valid_until": header.valid_until, "timezone": header.timezone,
        "parties": [{"key": key, "name": party.name} for key, party in covenant.parties.items()],
        "sources": covenant.sources,
        "themes": [{"name": t, "on": control.theme_on(t, now_ms)} for t in covenant.themes],
        "purposes": purposes, "recipients": recipients,
    }


def audit_page(audit: AuditLog, where: QueryFilter, page: int, size: int
               ) -> tuple[list[dict[str, Any]], int]:
    """One page, newest first, and the number of matches.

    The audit store answers in seq order only, so the matches are streamed once, keeping
    the seqs of the last `page` pages, then the page's entries are read by seq. A count
    and a descending query in the store would make this cheaper on very large logs.
    """
    tail: deque[int] = deque(maxlen=page * size)
    total = 0
    for seq, _ in audit.store.query(where):
        tail.append(seq)
        total += 1
    newest_first = list(reversed(tail))[(page - 1) * size:]
    rows = audit.store.audit_entries_at(sorted(newest_first))
    entries = [to_json(audit.schema.decode(data)) for _, data in rows]
    return sorted(entries, key=lambda e: -int(e["seq"])), total
