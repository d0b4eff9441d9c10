"""JSON input to event records: timestamps, dates, types, unknown and missing fields, limits.

Every refusal is an InvalidEvent with a reason code; its reason names the field and the
rule and never the offending value (it is written to the audit log).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.clock import to_millis
from broker.errors import InvalidEvent
from broker.model.json_input import MAX_MILLIS, Limits, convert
from broker.pipeline.ingest import validate
from tests import factories as f
from tests.unit.strategies import REGISTRY

BURGLARY = REGISTRY.get("politie.woninginbraak").raw
BAN = REGISTRY.get("om.gebiedsverbod").raw
LIMITS = Limits()


def numbers_schema(avro_type: Any) -> dict[str, Any]:
    return {"type": "record", "name": "t", "fields": [{"name": "n", "type": avro_type}]}


def refused(schema: dict[str, Any], obj: Any, limits: Limits = LIMITS) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as caught:
        convert(schema, obj, limits)
    return caught.value


def burglary(**overrides: Any) -> dict[str, Any]:
    return f.woninginbraak(**overrides)


# -- timestamps ------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    ("2026-05-10T08:00:00Z", datetime(2026, 5, 10, 8, tzinfo=UTC)),
    ("2026-05-10T08:00:00z", datetime(2026, 5, 10, 8, tzinfo=UTC)),
    ("2026-05-10T10:00:00+02:00", datetime(2026, 5, 10, 8, tzinfo=UTC)),
    ("2026-05-10T03:00:00-05:00", datetime(2026, 5, 10, 8, tzinfo=UTC)),
    ("2026-05-10T08:00:00.123Z", datetime(2026, 5, 10, 8, 0, 0, 123_000, tzinfo=UTC)),
    # below a millisecond is cut, never rounded up
    ("2026-05-10T08:00:00.123999Z", datetime(2026, 5, 10, 8, 0, 0, 123_000, tzinfo=UTC)),
    ("2026-05-10T00:30:00+02:00", datetime(2026, 5, 9, 22, 30, tzinfo=UTC)),
])
def test_iso_timestamps_with_zone_or_offset(text: str, expected: datetime) -> None:
    record = convert(BURGLARY, burglary(reported_at=text), LIMITS).record
    assert record["reported_at"] == expected
    assert record["reported_at"].utcoffset().total_seconds() == 0


@pytest.mark.parametrize(("millis", "expected"), [
    (0, datetime(1970, 1, 1, tzinfo=UTC)),
    (1_778_400_000_000, datetime(2026, 5, 10, 8, tzinfo=UTC)),
    (1_778_400_000_123, datetime(2026, 5, 10, 8, 0, 0, 123_000, tzinfo=UTC)),
])
def test_epoch_milliseconds(millis: int, expected: datetime) -> None:
    assert convert(BURGLARY, burglary(reported_at=millis), LIMITS).record["reported_at"] == \
        expected


@given(st.integers(0, 8_000_000_000_000))  # up to the year 2223
def test_epoch_milliseconds_round_trip_exactly(millis: int) -> None:
    record = convert(BURGLARY, burglary(reported_at=millis), LIMITS).record
    assert to_millis(record["reported_at"]) == millis


@pytest.mark.parametrize("millis", [MAX_MILLIS, 246_824_155_372_201, 8_589_952_269_036])
def test_epoch_milliseconds_round_trip_up_to_the_maximum(millis: int) -> None:
    record = convert(BURGLARY, burglary(reported_at=millis), LIMITS).record
    assert to_millis(record["reported_at"]) == millis


@pytest.mark.parametrize("text", ["2026-05-10T08:00:00", "2026-05-10T08:00", "2026-05-10",
                                  "2026-05-10 08:00:00.500"])
def test_naive_timestamp_is_refused(text: str) -> None:
    error = refused(BURGLARY, burglary(occurred_until=text))
    assert error.code == "naive_timestamp"
    assert error.reason == "occurred_until: timestamp has no zone or offset"


@pytest.mark.parametrize(("value", "code"), [
    (True, "wrong_type"), (False, "wrong_type"), (1.7784e12, "wrong_type"),
    (-1, "out_of_range"), (MAX_MILLIS + 1, "out_of_range"), ("yesterday", "wrong_value"),
    ("1969-12-31T23:59:59Z", "out_of_range"), ("1970-01-01T00:30:00+01:00", "out_of_range"),
    ([2026, 5, 10], "wrong_type"), ({"ms": 0}, "wrong_type"), (None, "wrong_type"),
])
def test_bad_timestamps(value: object, code: str) -> None:
    error = refused(BURGLARY, burglary(reported_at=value))
    assert error.code == code
    assert error.reason.startswith("reported_at: ")


# -- booleans, integers and numbers ----------------------------------------------------------
@pytest.mark.parametrize("value", [1, 0, "true", None])
def test_boolean_field_takes_only_a_json_boolean(value: object) -> None:
    error = refused(BURGLARY, burglary(attempt=value))
    assert error.code == "wrong_type"
    assert error.reason.startswith("attempt: ")


@pytest.mark.parametrize("avro_type", ["int", "long"])
def test_bool_is_not_accepted_as_an_integer(avro_type: str) -> None:
    for value in (True, False):
        error = refused(numbers_schema(avro_type), {"n": value})
        assert (error.code, error.reason) == ("wrong_type", "n: expected an integer, got boolean")
    assert convert(numbers_schema(avro_type), {"n": 1}, LIMITS).record == {"n": 1}


def test_integer_ranges() -> None:
    assert convert(numbers_schema("int"), {"n": 2**31 - 1}, LIMITS).record["n"] == 2**31 - 1
    assert refused(numbers_schema("int"), {"n": 2**31}).code == "out_of_range"
    assert refused(numbers_schema("int"), {"n": -(2**31) - 1}).code == "out_of_range"
    assert refused(numbers_schema("long"), {"n": 2**63}).code == "out_of_range"
    assert refused(numbers_schema("int"), {"n": 1.0}).code == "wrong_type"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinity_are_refused_in_a_number_field(value: float) -> None:
    error = refused(numbers_schema("double"), {"n": value})
    assert (error.code, error.reason) == ("wrong_value",
                                          "n: NaN and infinity are not allowed")
    assert convert(numbers_schema("double"), {"n": 2}, LIMITS).record == {"n": 2.0}
    assert refused(numbers_schema("double"), {"n": True}).code == "wrong_type"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_in_json_text_is_refused_at_ingest(constant: str) -> None:
    raw = json.dumps(burglary()).replace('"attempt": false', f'"attempt": {constant}')
    assert constant in raw
    with pytest.raises(InvalidEvent) as caught:
        validate(raw.encode(), "politie", "politie.woninginbraak", REGISTRY, LIMITS)
    assert caught.value.code == "invalid_json"


# -- dates -----------------------------------------------------------------------------------
def test_dates_as_yyyy_mm_dd() -> None:
    record = convert(BAN, f.gebiedsverbod(valid_from="2026-02-28", valid_until="2028-02-29"),
                     LIMITS).record
    assert record["valid_from"] == date(2026, 2, 28)
    assert record["valid_until"] == date(2028, 2, 29)
    assert type(record["valid_from"]) is date


@pytest.mark.parametrize("value", [
    "2026-5-1", "20260501", "2026/05/01", "01-05-2026", "2026-05-01T00:00:00Z",
    "2026-05-01 ", " 2026-05-01", "2026-02-30", "2026-13-01", "2026-W18-5", 20_574,
    "\uff12\uff10\uff12\uff16-05-01", True, None,
])
def test_other_date_spellings_are_refused(value: object) -> None:
    error = refused(BAN, f.gebiedsverbod(valid_from=value))
    assert error.code in ("wrong_value", "wrong_type")
    assert error.reason.startswith("valid_from: ")


# -- unknown and missing fields --------------------------------------------------------------
def test_unknown_fields_are_dropped_and_reported_by_name() -> None:
    event = burglary(shoe_size="VALUE-TOP", victim={"hair": "VALUE-NESTED"},
                     suspect={"car": "VALUE-SUSPECT"})
    conversion = convert(BURGLARY, event, LIMITS)
    assert sorted(conversion.dropped_fields) == ["shoe_size", "suspect.car", "victim.hair"]
    assert "shoe_size" not in conversion.record
    assert "hair" not in conversion.record["victim"]
    assert "car" not in conversion.record["suspect"]


def test_dropped_values_are_never_stored() -> None:
    event = burglary(note="DROPPED-SECRET-VALUE", address={"floor": "DROPPED-SECRET-FLOOR"})
    accepted = validate(json.dumps(event).encode(), "politie", "politie.woninginbraak",
                        REGISTRY, LIMITS)
    assert sorted(accepted.dropped_fields) == ["address.floor", "note"]
    assert b"DROPPED-SECRET" not in accepted.payload
    assert "DROPPED-SECRET" not in " ".join(accepted.dropped_fields)


def test_missing_nullable_fields_become_null() -> None:
    event = burglary()
    del event["suspect"]
    del event["victim"]["bsn"]
    del event["victim"]["email"]
    conversion = convert(BURGLARY, event, LIMITS)
    assert conversion.record["suspect"] is None
    assert conversion.record["victim"]["bsn"] is None
    assert conversion.record["victim"]["email"] is None
    assert conversion.dropped_fields == []


@pytest.mark.parametrize(("path", "reason"), [
    ("event_id", "event_id: required field is missing"),
    ("address", "address: required field is missing"),
    ("address.postcode", "address.postcode: required field is missing"),
    ("victim.consent_prevention_advice",
     "victim.consent_prevention_advice: required field is missing"),
    ("stolen_goods", "stolen_goods: required field is missing"),
])
def test_missing_required_fields_are_bad_input(path: str, reason: str) -> None:
    event = burglary()
    node = event
    *parents, last = path.split(".")
    for part in parents:
        node = node[part]
    del node[last]
    error = refused(BURGLARY, event)
    assert (error.code, error.reason) == ("missing_field", reason)


def test_explicit_null_in_a_required_field_is_bad_input() -> None:
    error = refused(BURGLARY, burglary(address={"street": None}))
    assert (error.code, error.reason) == ("wrong_type", "address.street: may not be null")


@pytest.mark.parametrize("value", [[], "event", 42, None])
def test_the_event_must_be_an_object(value: object) -> None:
    assert refused(BURGLARY, value).code == "wrong_type"


# -- strings ---------------------------------------------------------------------------------
def test_string_limit_is_in_utf8_bytes() -> None:
    limits = Limits(max_string_bytes=16 * 1024)
    at_limit = "x" * (16 * 1024)
    assert convert(BURGLARY, burglary(address={"street": at_limit}), limits).record[
        "address"]["street"] == at_limit
    error = refused(BURGLARY, burglary(address={"street": at_limit + "x"}), limits)
    assert (error.code, error.reason) == ("field_too_large",
                                          "address.street: 16385 bytes, the limit is 16384")
    # 8193 characters of two bytes each: over the byte limit though under it in characters
    assert refused(BURGLARY, burglary(address={"street": "\u00e9" * 8193}), limits).code == \
        "field_too_large"


def test_string_limit_applies_inside_arrays_and_is_configurable() -> None:
    schema = numbers_schema({"type": "array", "items": "string"})
    limits = Limits(max_string_bytes=8)
    assert convert(schema, {"n": ["12345678"]}, limits).record == {"n": ["12345678"]}
    error = refused(schema, {"n": ["laptop", "123456789"]}, limits)
    assert (error.code, error.reason) == ("field_too_large", "n[1]: 9 bytes, the limit is 8")


def test_oversized_event_is_refused_before_parsing() -> None:
    raw = json.dumps(burglary()).encode()
    with pytest.raises(InvalidEvent) as caught:
        validate(raw, "politie", "politie.woninginbraak", REGISTRY,
                 Limits(max_event_bytes=len(raw) - 1))
    assert caught.value.code == "event_too_large"
    assert validate(raw, "politie", "politie.woninginbraak", REGISTRY,
                    Limits(max_event_bytes=len(raw))).record["address"]["wijk"] == "noord"


@pytest.mark.parametrize("surrogate", ["\ud800", chr(0xDFFF), "abc\udc00def"])
def test_lone_surrogate_is_invalid_unicode(surrogate: str) -> None:
    error = refused(BURGLARY, burglary(victim={"name": surrogate}))
    assert (error.code, error.reason) == ("invalid_unicode",
                                          "victim.name: contains a lone surrogate")


def test_lone_surrogate_escaped_in_json_text_is_invalid_unicode_at_ingest() -> None:
    raw = json.dumps(burglary(victim={"name": "SURROGATE"})).replace("SURROGATE", "\\ud83d")
    with pytest.raises(InvalidEvent) as caught:
        validate(raw.encode(), "politie", "politie.woninginbraak", REGISTRY, LIMITS)
    assert caught.value.code == "invalid_unicode"


def test_a_surrogate_pair_is_fine() -> None:
    raw = json.dumps(burglary(victim={"name": "PAIR"})).replace("PAIR", "\\ud83d\\ude00")
    accepted = validate(raw.encode(), "politie", "politie.woninginbraak", REGISTRY, LIMITS)
    assert accepted.record["victim"]["name"] == "\U0001f600"


# -- enums, uuids, arrays --------------------------------------------------------------------
def test_enum_and_uuid_refusals_do_not_echo_the_value() -> None:
    secret = "VALUE-THAT-MUST-NOT-ECHO"
    for event in (burglary(modus_operandi=secret), burglary(event_id=secret),
                  burglary(stolen_goods=[secret, 5]), burglary(reported_at=secret),
                  burglary(attempt=secret)):
        error = refused(BURGLARY, event)
        assert secret not in error.reason
        assert secret not in str(error)


def test_enum_must_be_a_symbol() -> None:
    error = refused(BURGLARY, burglary(modus_operandi="Flipperen"))
    assert (error.code, error.reason) == (
        "wrong_value", "modus_operandi: not one of cilinder_trekken, flipperen, "
        "raam_forceren, inklimmen, overig, onbekend")


def test_uuid_must_parse() -> None:
    assert refused(BURGLARY, burglary(event_id="not-a-uuid")).code == "wrong_value"
    assert refused(BURGLARY, burglary(event_id=123)).code == "wrong_type"


CANONICAL = "6f1c2a8e-0b1d-4c3e-9f2a-1234567890ab"


@pytest.mark.parametrize("spelling", [f"urn:uuid:{CANONICAL}", f"{{{CANONICAL}}}",
                                      CANONICAL.replace("-", "")])
def test_a_uuid_in_another_spelling_is_refused_or_made_canonical(spelling: str) -> None:
    raw = json.dumps(burglary(event_id=spelling)).encode()
    try:
        accepted = validate(raw, "politie", "politie.woninginbraak", REGISTRY, LIMITS)
    except InvalidEvent:
        return
    assert accepted.event_id == CANONICAL


def test_upper_case_uuid_has_the_canonical_event_id() -> None:
    raw = json.dumps(burglary(event_id=CANONICAL.upper())).encode()
    accepted = validate(raw, "politie", "politie.woninginbraak", REGISTRY, LIMITS)
    assert accepted.event_id == CANONICAL
    assert REGISTRY.decode_single_object(accepted.payload)[1]["event_id"] == uuid.UUID(CANONICAL)


def test_array_items_are_checked_with_their_index() -> None:
    error = refused(BURGLARY, burglary(stolen_goods=["laptop", 5]))
    assert (error.code, error.reason) == ("wrong_type",
                                          "stolen_goods[1]: expected a string, got integer")
    assert refused(BURGLARY, burglary(stolen_goods="laptop")).code == "wrong_type"


def test_nested_record_must_be_an_object() -> None:
    assert refused(BURGLARY, burglary(address="Dorpsstraat 12")).code == "wrong_type"
    assert refused(BURGLARY, burglary(suspect="lange man")).code == "wrong_type"


def test_nested_record_type_error_names_the_field() -> None:
    error = refused(BURGLARY, burglary(address="Dorpsstraat 12"))
    assert error.reason == "address: expected an object, got string"
