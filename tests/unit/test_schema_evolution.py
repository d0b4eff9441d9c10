"""Schema evolution: messages written with an older schema version resolve to the current one.

schemas/events/history/ ships version 1 of gemeente.boa_waarneming (before the category
inbraaksporen and the optional vehicle_plate and person_description existed). Incompatible
older versions live only under tests/fixtures/schema_history/ and are copied into a
throwaway schema directory.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from broker.app.service import Broker
from broker.clock import parse_instant
from broker.errors import InvalidEvent, SchemaError
from broker.model.evolution import incompatibilities
from broker.model.json_input import Limits, convert
from broker.model.schemas import Schema, SchemaRegistry
from broker.pipeline.ingest import validate
from broker.policy.lint import lint
from tests import factories as f

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "schemas"
FIXTURES = REPO / "tests" / "fixtures" / "schema_history"
NOW = parse_instant("2026-05-10T12:00:00Z")
BOA = "gemeente.boa_waarneming"


def _old(registry: SchemaRegistry, file_name: str) -> Schema:
    return next(s for s in registry.history.values() if s.path.name == file_name)


def _written_with(old: Schema, **overrides: Any) -> bytes:
    """A boa observation as a source still on `old` sends it: only the fields `old` has."""
    event = f.boa_waarneming(**overrides)
    names = {field["name"] for field in old.raw["fields"]}
    return old.encode(convert(old.raw, {k: v for k, v in event.items() if k in names},
                              Limits()).record)


@pytest.fixture(scope="module")
def shipped() -> SchemaRegistry:
    return SchemaRegistry(SCHEMAS)


@pytest.fixture
def with_fixtures(tmp_path: Path) -> Path:
    """The shipped schemas plus the test-only older versions under events/history/."""
    root = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, root)
    for path in FIXTURES.glob("*.avsc"):
        shutil.copy(path, root / "events" / "history" / path.name)
    return root


# -- the shipped history --------------------------------------------------------------------
def test_two_versions_of_boa_waarneming_ship_and_the_old_one_is_compatible(
        shipped: SchemaRegistry) -> None:
    old = _old(shipped, "gemeente.boa_waarneming.v1.avsc")
    current = shipped.get(BOA)
    assert old.name == BOA
    assert old.fingerprint != current.fingerprint
    assert shipped.incompatible == {}
    assert incompatibilities(old.raw, current.raw) == []
    assert set(current.fields) - set(old.fields) == {"vehicle_plate", "person_description"}


@pytest.mark.parametrize("category", ["verdachte_situatie", "overlast", "overig"])
def test_a_version_1_message_is_accepted_and_resolved_to_the_current_schema(
        shipped: SchemaRegistry, category: str) -> None:
    raw = _written_with(_old(shipped, "gemeente.boa_waarneming.v1.avsc"), category=category)
    accepted = validate(raw, "gemeente", BOA, shipped, Limits())
    current = shipped.get(BOA)
    assert accepted.schema is current
    assert accepted.record["vehicle_plate"] is None
    assert accepted.record["person_description"] is None
    assert accepted.record["category"] == category
    # stored under the current schema: the payload names the current fingerprint
    assert accepted.payload[2:10] == current.fingerprint
    assert current.decode(accepted.payload)["boa_id"] == "BOA-117"


def test_version_1_and_current_messages_flow_end_to_end_side_by_side(broker: Broker) -> None:
    old = _old(broker.registry, "gemeente.boa_waarneming.v1.avsc")
    current = broker.registry.get(BOA)
    v1 = _written_with(old, category="overlast", description="fietsen op de stoep")
    v2 = current.encode(convert(current.raw, f.boa_waarneming(), Limits()).record)
    report = broker.ingest("gemeente", BOA, [("v1", v1), ("v2", v2)], NOW)
    assert (report.accepted, report.quarantined) == (2, [])
    assert report.decided.released == 2
    records = [d.record for d in broker.consume("politie-amstelland", None, 0, NOW)]
    assert [r["description"] for r in records] == ["fietsen op de stoep",
                                                   "persoon kijkt bij ramen naar binnen"]
    assert records[0]["vehicle_plate"] is None
    assert records[1]["vehicle_plate"] == "XX-123-Y"


def test_the_covenant_check_is_unaffected_by_older_schema_versions() -> None:
    assert lint(REPO / "policies" / "amstelveen.yaml", SCHEMAS) == []


# -- incompatible older versions (test fixtures, never shipped) -----------------------------
def test_an_incompatible_old_version_is_quarantined_with_the_changes_named(
        with_fixtures: Path) -> None:
    registry = SchemaRegistry(with_fixtures)
    old = _old(registry, "gemeente.boa_waarneming.v0-incompatible.avsc")
    record = {"event_id": f.new_id(), "observed_at": "2026-05-10T10:30:00Z",
              "boa_id": "BOA-117", "location": "Bankrasweg 1187 AB",
              "category": "overlast", "description": "CANARY-OLD-WRITER"}
    with pytest.raises(InvalidEvent) as caught:
        validate(old.encode(record), "gemeente", BOA, registry, Limits())
    assert caught.value.code == "incompatible_schema"
    assert caught.value.reason == (
        f"writer schema gemeente.boa_waarneming.v0-incompatible.avsc "
        f"({old.fingerprint.hex()}) does not resolve to the current gemeente.boa_waarneming: "
        "observed_at: was string, is now long; wijk: required in the current schema, has no "
        "default, and the writer does not have it; location: was string, is now record "
        "Location")


def test_a_value_the_current_schema_lacks_is_quarantined_without_quoting_it(
        with_fixtures: Path) -> None:
    registry = SchemaRegistry(with_fixtures)
    old = _old(registry, "gemeente.boa_waarneming.v1-extra-symbol.avsc")
    assert old.fingerprint not in registry.incompatible  # compatible as a schema
    ok = validate(_written_with(old, category="overlast"), "gemeente", BOA, registry, Limits())
    assert ok.record["category"] == "overlast"
    with pytest.raises(InvalidEvent) as caught:
        validate(_written_with(old, category="graffiti"), "gemeente", BOA, registry, Limits())
    assert caught.value.code == "incompatible_schema"
    assert "v1-extra-symbol.avsc" in caught.value.reason
    assert "graffiti" not in caught.value.reason


def test_incompatible_messages_land_in_quarantine_with_an_audit_record(
        make_broker: Callable[..., Broker], with_fixtures: Path) -> None:
    broker = make_broker(schemas_dir=with_fixtures)
    old = _old(broker.registry, "gemeente.boa_waarneming.v0-incompatible.avsc")
    bad = old.encode({"event_id": f.new_id(), "observed_at": "x", "boa_id": "BOA-1",
                      "location": "x", "category": "overig", "description": "x"})
    good = _written_with(_old(broker.registry, "gemeente.boa_waarneming.v1.avsc"))
    report = broker.ingest("gemeente", BOA, [("old", bad), ("v1", good)], NOW)
    assert report.accepted == 1
    assert [(q.position, q.reason_code) for q in report.quarantined] == [
        ("old", "incompatible_schema")]
    assert broker.log.quarantine_count() == 1
    schema = broker.registry.get("records.audit_entry")
    entries = [schema.decode(d) for _, d in broker.log.audit_rows()]
    [entry] = [e for e in entries if e["name"] == "quarantine"]
    assert entry["reason_code"] == "incompatible_schema"
    assert "wijk: required in the current schema" in entry["reason"]
    assert broker.verify_audit().ok


def test_an_old_version_of_a_type_that_does_not_exist_is_refused_at_load(
        tmp_path: Path) -> None:
    root = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, root)
    orphan = json.loads((root / "events" / "history" /
                         "gemeente.boa_waarneming.v1.avsc").read_text())
    orphan["name"] = "boa_melding"
    (root / "events" / "history" / "gemeente.boa_melding.v1.avsc").write_text(
        json.dumps(orphan))
    with pytest.raises(SchemaError, match=r"gemeente\.boa_melding, which has no current schema"):
        SchemaRegistry(root)


# -- the compatibility rules ----------------------------------------------------------------
def _record(*fields: dict[str, Any], name: str = "r") -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "t", "fields": list(fields)}


@pytest.mark.parametrize(("writer", "reader"), [
    ("int", "long"), ("int", "double"), ("long", "float"), ("float", "double"),
    ("string", "bytes"), ("bytes", "string"), ("string", ["null", "string"]),
    (["null", "string"], "string"),  # fails only for a null: left to the decoder
    ({"type": "enum", "name": "E", "symbols": ["A", "B"]},
     {"type": "enum", "name": "E", "symbols": ["A"]}),  # fails only for B
    ({"type": "array", "items": "int"}, {"type": "array", "items": "long"}),
    ({"type": "map", "values": "int"}, {"type": "map", "values": "double"}),
])
def test_compatible_changes(writer: Any, reader: Any) -> None:
    assert incompatibilities(_record({"name": "x", "type": writer}),
                             _record({"name": "x", "type": reader})) == []


@pytest.mark.parametrize(("writer", "reader", "problem"), [
    ("long", "int", "x: was long, is now int"),
    ("string", "long", "x: was string, is now long"),
    (["null", "string"], "long", "x: no branch of the writer's union resolves to long"),
    ("boolean", ["null", "string"], "x: the writer's boolean matches no branch of the "
                                    "current union"),
    ({"type": "enum", "name": "E", "symbols": ["A"]},
     {"type": "enum", "name": "F", "symbols": ["A"]}, "x: was enum E, is now enum F"),
    ({"type": "fixed", "name": "F", "size": 4}, {"type": "fixed", "name": "F", "size": 8},
     "x: fixed size was 4, is now 8"),
    ({"type": "array", "items": "string"}, {"type": "array", "items": "int"},
     "x[]: was string, is now int"),
])
def test_incompatible_changes(writer: Any, reader: Any, problem: str) -> None:
    assert incompatibilities(_record({"name": "x", "type": writer}),
                             _record({"name": "x", "type": reader})) == [problem]


def test_fields_added_need_a_default_and_fields_removed_are_skipped() -> None:
    writer = _record({"name": "a", "type": "string"}, {"name": "gone", "type": "int"})
    with_default = _record({"name": "a", "type": "string"},
                           {"name": "b", "type": ["null", "string"], "default": None})
    without = _record({"name": "a", "type": "string"}, {"name": "b", "type": "string"})
    renamed = _record({"name": "a", "type": "string"},
                      {"name": "g", "type": "long", "aliases": ["gone"]})
    assert incompatibilities(writer, with_default) == []
    assert incompatibilities(writer, renamed) == []
    assert incompatibilities(writer, without) == [
        "b: required in the current schema, has no default, and the writer does not have it"]


def test_nested_records_are_checked_by_path() -> None:
    inner_w = {"type": "record", "name": "In", "fields": [{"name": "n", "type": "string"}]}
    inner_r = {"type": "record", "name": "In", "fields": [{"name": "n", "type": "int"}]}
    assert incompatibilities(_record({"name": "o", "type": inner_w}),
                             _record({"name": "o", "type": inner_r})) == [
        "o.n: was string, is now int"]


@pytest.mark.parametrize("view", ["informatie_politie", "nazorg_detentie_terugkeer",
                                  "preventie_woninginbraak", "slachtoffer_preventieadvies"])
def test_a_record_released_before_every_view_had_a_ref_still_reads(view: str) -> None:
    """Issue 12 gave every view a ref. Records an embedded data dir released under the view
    without one (kept in schemas/views/history/) still decode, with an empty ref: an
    upgrade must not leave a recipient's stream unreadable."""
    registry = SchemaRegistry(Path(__file__).resolve().parents[2] / "schemas")
    [old] = [s for s in registry.history.values() if s.name == f"views.{view}"]
    assert "ref" not in {fd["name"] for fd in old.raw["fields"]}
    record = {fd["name"]: _sample(fd["type"]) for fd in old.raw["fields"]}
    schema, decoded = registry.decode_single_object(old.encode(record), kinds=("views",))
    assert schema is registry.get(f"views.{view}")
    assert decoded["ref"] == ""
    # (a uuid comes back as the UUID it names)
    assert {k: str(v) if k == "event_id" else v for k, v in decoded.items()
            if k != "ref"} == record


def _sample(avro_type: Any) -> Any:
    """A plain value of an Avro type of the views (enough for a round trip)."""
    if isinstance(avro_type, list):
        return None if "null" in avro_type else _sample(avro_type[0])
    if isinstance(avro_type, dict):
        if avro_type["type"] == "record":
            return {fd["name"]: _sample(fd["type"]) for fd in avro_type["fields"]}
        if avro_type["type"] == "array":
            return [_sample(avro_type["items"])]
        if avro_type["type"] == "enum":
            return avro_type["symbols"][0]
        if avro_type.get("logicalType") == "uuid":
            return "5f0c6e8e-2f0e-4c1a-9a57-3c4b1d2e7f60"
        if avro_type.get("logicalType") == "date":
            return __import__("datetime").date(2026, 5, 1)
        if avro_type.get("logicalType", "").startswith("timestamp"):
            return __import__("datetime").datetime(2026, 5, 1, tzinfo=__import__(
                "datetime").timezone.utc)
        return _sample(avro_type["type"])
    return {"string": "x", "boolean": True, "int": 1, "long": 1}[avro_type]
