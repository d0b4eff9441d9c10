"""Valid events of every shipped type, as JSON-ready dicts; tests override what they probe."""

from __future__ import annotations

import copy
import itertools
import json
import uuid
from typing import Any

_counter = itertools.count(1)


def new_id() -> str:
    return str(uuid.UUID(int=next(_counter) + (0xABCD << 64), version=4))


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def woninginbraak(**overrides: Any) -> dict[str, Any]:
    base = {
        "event_id": new_id(),
        "reported_at": "2026-05-10T08:00:00Z",
        "occurred_from": "2026-05-09T22:15:00+02:00",
        "occurred_until": "2026-05-10T06:40:00+02:00",
        "address": {"street": "Dorpsstraat", "house_number": "12", "postcode": "1181 ZM",
                    "city": "Amstelveen", "wijk": "noord"},
        "attempt": False,
        "heterdaad": False,
        "modus_operandi": "cilinder_trekken",
        "victim": {"name": "Jan Slachtoffer", "bsn": "111222333", "phone": "0612345678",
                   "email": "jan@example.nl", "consent_prevention_advice": True},
        "suspect": {"description": "lange man, blauwe jas", "name": "Piet Verdachte",
                    "bsn": "444555666"},
        "stolen_goods": ["laptop", "sieraden"],
        "police_case_number": "PL1300-2026-000123",
    }
    return _merge(base, overrides)


def gebiedsverbod(**overrides: Any) -> dict[str, Any]:
    base = {
        "event_id": new_id(),
        "decided_at": "2026-05-01T10:00:00Z",
        "valid_from": "2026-05-01",
        "valid_until": "2026-07-31",
        "person": {"name": "Karel Verbod", "date_of_birth": "1990-02-03", "bsn": "777888999",
                   "description": "slank, rode pet"},
        "area": {"wijken": ["noord", "oost"], "streets": ["Dorpsstraat"]},
        "legal_ground": "art. 38v Sr",
        "parketnummer": "13/123456-26",
        "offence_category": "woninginbraak",
    }
    return _merge(base, overrides)


def detentie_uitstroom(**overrides: Any) -> dict[str, Any]:
    base = {
        "event_id": new_id(),
        "notified_at": "2026-05-09T09:00:00Z",
        "expected_release_date": "2026-06-15",
        "facility": "PI Zaanstad",
        "person": {"name": "Ali Terugkeer", "date_of_birth": "1985-11-30", "bsn": "123123123"},
        "municipality": "Amstelveen",
        "needs": {"id_document": True, "housing": True, "income": False, "debts": True,
                  "care": False},
        "offence_category": "diefstal",
        "risk_notes": "GEHEIM-RISICO-NOTITIE",
        "parketnummer": "13/654321-25",
    }
    return _merge(base, overrides)


def boa_waarneming(**overrides: Any) -> dict[str, Any]:
    base = {
        "event_id": new_id(),
        "observed_at": "2026-05-10T10:30:00Z",
        "boa_id": "BOA-117",
        "wijk": "zuid",
        "location": {"street": "Bankrasweg", "postcode": "1187 AB"},
        "category": "verdachte_situatie",
        "description": "persoon kijkt bij ramen naar binnen",
        "vehicle_plate": "XX-123-Y",
        "person_description": "jongen, grijze hoodie",
    }
    return _merge(base, overrides)


def jsonl(*events: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


def lines(*events: dict[str, Any] | str) -> list[tuple[str, bytes]]:
    return [(f"line {i}", (e if isinstance(e, str) else json.dumps(e)).encode())
            for i, e in enumerate(events, 1)]


def numbered(*events: dict[str, Any] | str) -> list[tuple[int, bytes]]:
    """The events as numbered input lines (Broker.ingest_settled, the CLI's line numbers)."""
    return [(i, raw) for i, (_, raw) in enumerate(lines(*events), 1)]
