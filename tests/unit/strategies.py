"""Hypothesis strategies: random valid events of the four shipped event types, as JSON.

The values are what a source would send (`json.dumps` ready): instants as epoch
milliseconds or ISO-8601 strings with `Z` or an offset, dates as YYYY-MM-DD, nested
objects for nested records, and nullable fields sometimes null and sometimes left out.
The generator walks the Avro schema in schemas/events/, so a field added to a schema is
generated too; the overrides below only make values realistic (BSNs, postcodes, wijken,
Amstelland municipalities) so that conditions pass often enough to be worth testing.

`anchor_ms` puts every instant within a few weeks before (and at most the clock-skew bound
after) and every date within about a year of one moment (the decision time a test has in
mind), so max-age and validity windows are met about as often as they are missed.

Also here, for the policy-engine unit tests: `plant` (put a value at a dotted path of a
JSON event), `fixed_key` (deterministic pseudonym keys) and `decoded` (a JSON event as the
decider sees it). Fixed example events are in tests/factories.py.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from broker.model.json_input import Limits
from broker.model.schemas import SchemaRegistry
from broker.pipeline.ingest import validate

REPO = Path(__file__).resolve().parents[2]
SCHEMAS_DIR = REPO / "schemas"
POLICY_FILE = REPO / "policies" / "amstelveen.yaml"
REGISTRY = SchemaRegistry(SCHEMAS_DIR)

EVENT_TYPES = ("politie.woninginbraak", "om.gebiedsverbod", "om.detentie_uitstroom",
               "gemeente.boa_waarneming")
WIJKEN = ("noord", "oost", "zuid", "west")
AMSTELLAND = ("Aalsmeer", "Amstelveen", "Diemen", "Ouder-Amstel", "Uithoorn")
DAY_MS = 86_400_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Decision times worth testing: the covenant runs 2020-04-29 .. 2026-12-31 (local dates).
EARLIEST_MS = int((datetime(2020, 1, 1, tzinfo=UTC) - EPOCH).total_seconds()) * 1000
LATEST_MS = int((datetime(2027, 3, 1, tzinfo=UTC) - EPOCH).total_seconds()) * 1000

Strategy = st.SearchStrategy[Any]

# Printable text with some non-ASCII; never surrogates (those are bad input, tested apart).
text = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), max_size=24)


def bsns() -> Strategy:
    """Nine-digit, BSN-like strings (the audit log must never hold one in clear)."""
    return st.integers(100_000_000, 999_999_999).map(str)


def postcodes() -> Strategy:
    """Dutch postcodes in the spellings sources use: "1181 ZM", "1181ZM", "1181 zm"."""
    letters = st.text(alphabet="ABCDEFGHJKLMNPRSTVWXZ", min_size=2, max_size=2)
    return st.builds(
        lambda digits, sep, pair, lower: f"{digits}{sep}{pair.lower() if lower else pair}",
        st.integers(1000, 9999), st.sampled_from(["", " "]), letters, st.booleans())


def wijken() -> Strategy:
    return st.one_of(st.sampled_from(WIJKEN), text)


def municipalities() -> Strategy:
    """Mostly Amstelland (in odd case and spacing), sometimes elsewhere."""
    inside = st.builds(lambda name, up, pad: (" " if pad else "") + (name.upper() if up else name),
                       st.sampled_from(AMSTELLAND), st.booleans(), st.booleans())
    return st.one_of(inside, st.sampled_from(["Amsterdam", "Haarlem", "Utrecht"]), text)


SKEW_MS = 300_000  # max_clock_skew_s's default


def millis(anchor_ms: int | None, spread_days: int = 30) -> st.SearchStrategy[int]:
    if anchor_ms is None:
        return st.integers(EARLIEST_MS, LATEST_MS)
    # No later than the default clock-skew bound after the anchor: ingest quarantines an
    # instant further ahead as from_the_future (it records when something happened).
    return st.integers(max(0, anchor_ms - spread_days * DAY_MS), anchor_ms + SKEW_MS)


def json_instant(ms: int) -> Strategy:
    """One instant in each accepted JSON spelling: epoch ms, ISO with Z, ISO with an offset."""
    instant = EPOCH + timedelta(milliseconds=ms)
    offsets = st.sampled_from([timedelta(0), timedelta(hours=1), timedelta(hours=2),
                               timedelta(hours=-5), timedelta(hours=5, minutes=30),
                               timedelta(hours=14)])
    iso_z = instant.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return st.one_of(
        st.just(ms),
        st.just(iso_z),
        offsets.map(lambda off: instant.astimezone(timezone(off)).isoformat(
            timespec="milliseconds")),
    )


def instants(anchor_ms: int | None, spread_days: int = 30) -> Strategy:
    return millis(anchor_ms, spread_days).flatmap(json_instant)


def iso_dates(anchor_ms: int | None, spread_days: int = 400) -> Strategy:
    if anchor_ms is None:
        days = st.dates(date(1930, 1, 1), date(2030, 12, 31))
    else:
        center = (EPOCH + timedelta(milliseconds=anchor_ms)).date()
        days = st.dates(center - timedelta(days=spread_days), center + timedelta(days=spread_days))
    return days.map(date.isoformat)


def _overrides(event_type: str, anchor_ms: int | None) -> dict[str, Strategy]:
    common: dict[str, Strategy] = {"event_id": st.uuids().map(str)}
    specific: dict[str, dict[str, Strategy]] = {
        "politie.woninginbraak": {
            "address.postcode": st.one_of(postcodes(), text),
            "address.wijk": wijken(),
            "address.city": st.sampled_from(AMSTELLAND),
            "victim.bsn": bsns(),
            "suspect.bsn": bsns(),
            "victim.email": st.emails(),
            "victim.phone": st.from_regex(r"\A06[0-9]{8}\Z"),
            "occurred_from": instants(anchor_ms, 20),
            "occurred_until": instants(anchor_ms, 20),
        },
        "om.gebiedsverbod": {
            "person.bsn": bsns(),
            "person.date_of_birth": iso_dates(None),
            "area.wijken": st.lists(st.sampled_from(WIJKEN), unique=True, max_size=4),
            "valid_from": iso_dates(anchor_ms, 120),
            "valid_until": iso_dates(anchor_ms, 120),
        },
        "om.detentie_uitstroom": {
            "person.bsn": bsns(),
            "person.date_of_birth": iso_dates(None),
            "municipality": municipalities(),
        },
        "gemeente.boa_waarneming": {
            "wijk": wijken(),
            "location.postcode": st.one_of(postcodes(), text),
            "boa_id": st.from_regex(r"\ABOA[0-9]{4}\Z"),
        },
    }
    return {**common, **specific[event_type]}


def _for_type(avro_type: Any, path: str, overrides: dict[str, Strategy],
              anchor_ms: int | None) -> Strategy:
    if path in overrides:
        return overrides[path]
    if isinstance(avro_type, list):
        branches = [b for b in avro_type if b != "null"]
        assert len(branches) == 1, f"{path}: the generator only knows ['null', T] unions"
        return st.one_of(st.none(), _for_type(branches[0], path, overrides, anchor_ms))
    if isinstance(avro_type, dict):
        kind, logical = avro_type["type"], avro_type.get("logicalType")
        if kind == "record":
            return record(avro_type, f"{path}.", overrides, anchor_ms)
        if kind == "enum":
            return st.sampled_from(avro_type["symbols"])
        if kind == "array":
            return st.lists(_for_type(avro_type["items"], f"{path}[]", overrides, anchor_ms),
                            max_size=3)
        if logical == "timestamp-millis":
            return instants(anchor_ms)
        if logical == "date":
            return iso_dates(anchor_ms)
        if logical == "uuid":
            return st.uuids().map(str)
        return _for_type(kind, path, overrides, anchor_ms)
    primitives: dict[str, Callable[[], Strategy]] = {
        "string": lambda: text,
        "boolean": st.booleans,
        "int": lambda: st.integers(-(2**31), 2**31 - 1),
        "long": lambda: st.integers(-(2**63), 2**63 - 1),
    }
    return primitives[avro_type]()


def record(schema: dict[str, Any], prefix: str, overrides: dict[str, Strategy],
           anchor_ms: int | None) -> st.SearchStrategy[dict[str, Any]]:
    """A JSON object for an Avro record; nullable fields are null, a value, or left out."""
    required: dict[str, Strategy] = {}
    optional: dict[str, Strategy] = {}
    for field in schema["fields"]:
        strategy = _for_type(field["type"], f"{prefix}{field['name']}", overrides, anchor_ms)
        nullable = isinstance(field["type"], list) and "null" in field["type"]
        (optional if nullable else required)[field["name"]] = strategy
    return st.fixed_dictionaries(required, optional=optional)


def _ordered_window(event: dict[str, Any]) -> dict[str, Any]:
    # Most real bans run forward; a reversed window would only ever be withheld.
    if "valid_from" in event and event["valid_from"] > event["valid_until"]:
        event["valid_from"], event["valid_until"] = event["valid_until"], event["valid_from"]
    return event


def events(event_type: str, anchor_ms: int | None = None) -> st.SearchStrategy[dict[str, Any]]:
    """Random valid JSON events of one type."""
    schema = REGISTRY.get(event_type).raw
    return record(schema, "", _overrides(event_type, anchor_ms), anchor_ms).map(_ordered_window)


def any_event(anchor_ms: int | None = None) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    """(event type, JSON event) for any of the four shipped types."""
    return st.sampled_from(EVENT_TYPES).flatmap(
        lambda event_type: events(event_type, anchor_ms).map(lambda ev: (event_type, ev)))


def minimal(schema: dict[str, Any]) -> dict[str, Any]:
    """The smallest valid JSON object for a record schema (to fill a null parent record)."""
    out: dict[str, Any] = {}
    for field in schema["fields"]:
        avro_type = field["type"]
        if isinstance(avro_type, list):
            out[field["name"]] = None
            continue
        kind = avro_type["type"] if isinstance(avro_type, dict) else avro_type
        logical = avro_type.get("logicalType") if isinstance(avro_type, dict) else None
        if kind == "record":
            out[field["name"]] = minimal(avro_type)
        elif logical == "uuid":
            out[field["name"]] = str(uuid.uuid4())
        elif logical == "timestamp-millis":
            out[field["name"]] = 0
        elif logical == "date":
            out[field["name"]] = "2026-01-01"
        elif kind == "enum":
            out[field["name"]] = avro_type["symbols"][0]
        elif kind == "array":
            out[field["name"]] = []
        else:
            out[field["name"]] = {"string": "x", "boolean": False, "int": 0, "long": 0}[kind]
    return out


def record_schema_at(event_type: str, path: str) -> dict[str, Any]:
    """The raw Avro record schema of the record at a dotted path ("" for the event)."""
    node: dict[str, Any] = REGISTRY.get(event_type).raw
    for part in [p for p in path.split(".") if p]:
        field = next(f for f in node["fields"] if f["name"] == part)
        avro_type = field["type"]
        if isinstance(avro_type, list):
            avro_type = next(b for b in avro_type if b != "null")
        node = avro_type
    return node


def plant(event_type: str, event: dict[str, Any], path: str, value: Any) -> None:
    """Set `path` in a JSON event to `value`, filling null or absent parent records."""
    parts = path.split(".")
    node = event
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node.get(part), dict):
            node[part] = minimal(record_schema_at(event_type, ".".join(parts[:i + 1])))
        node = node[part]
    node[parts[-1]] = value


# -- fixed examples and helpers shared by the unit tests ---------------------------------------
def fixed_key(purpose: str) -> bytes:
    """A deterministic 32-byte pseudonym key per purpose (tests never touch a key store)."""
    return hashlib.sha256(f"test-key:{purpose}".encode()).digest()


def decoded(event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
    """A JSON event as the decider sees it: validated, Avro-encoded, decoded."""
    accepted = validate(json.dumps(obj).encode(), event_type.split(".", 1)[0], event_type,
                        REGISTRY, Limits())
    return REGISTRY.decode_single_object(accepted.payload)[1]
