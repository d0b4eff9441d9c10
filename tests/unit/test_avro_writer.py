"""The compiled Avro writer writes fastavro's bytes, and fails where fastavro fails.

`Schema.encode` takes the compiled fast path and hands anything outside it to fastavro.
The anchor is fastavro itself: for random values drawn from every schema in schemas/,
valid ones and awkward ones (wrong types, bools for ints, ints for floats, naive and
offset datetimes, tuples in unions, missing and extra fields, surrogates, out-of-range
numbers), the bytes are fastavro's, or both raise.
"""

from __future__ import annotations

import io
import math
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.model import codec
from broker.model.avro_writer import Fallback, compile_writer, zigzag
from broker.model.schemas import Schema
from tests.unit.strategies import REGISTRY

ALL_SCHEMAS = sorted(REGISTRY.by_name)
Strategy = st.SearchStrategy[Any]

odd = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(),
                st.text(max_size=4), st.binary(max_size=4), st.just(()), st.just([]),
                st.just({}), st.builds(lambda: datetime(2026, 5, 12, 14, 0)))
instants = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                 timezones=st.sampled_from([UTC, timezone(timedelta(hours=2)),
                                            timezone(timedelta(hours=-9, minutes=-30))])))


def values(schema: Any, named: dict[str, Any], depth: int = 0) -> Strategy:
    """Mostly valid values of an Avro type, sometimes an awkward one."""
    return st.one_of(_valid(schema, named, depth), odd) if depth < 4 else odd


def _valid(schema: Any, named: dict[str, Any], depth: int) -> Strategy:
    if isinstance(schema, list):
        return st.one_of(*(values(b, named, depth + 1) for b in schema),
                         *(st.tuples(st.just(b if isinstance(b, str) else b.get("name", "x")),
                                     values(b, named, depth + 1)) for b in schema[:1]))
    if isinstance(schema, str):
        if schema in named:
            return values(named[schema], named, depth + 1)
        return {"null": st.none(), "boolean": st.booleans(),
                "int": st.integers(-(2**31), 2**31 - 1),
                "long": st.integers(-(2**63), 2**63 - 1), "float": st.floats(width=32),
                "double": st.floats(), "bytes": st.binary(max_size=8),
                "string": st.text(max_size=8)}[schema]
    logical = schema.get("logicalType")
    if logical == "timestamp-millis":
        return instants
    if logical == "date":
        return st.one_of(st.dates(), st.integers(-(2**31), 2**31 - 1),
                         st.datetimes(timezones=st.just(UTC)))
    if logical == "uuid":
        return st.one_of(st.uuids(), st.text(max_size=40))
    kind = schema["type"]
    if kind == "record":
        fields = {f["name"]: values(f["type"], named, depth + 1) for f in schema["fields"]}
        full = st.fixed_dictionaries(fields)
        return st.one_of(full, full.map(_drop_one), full.map(lambda r: {**r, "extra": 1}))
    if kind == "enum":
        return st.one_of(st.sampled_from(schema["symbols"]), st.text(max_size=3))
    if kind == "array":
        return st.one_of(st.lists(values(schema["items"], named, depth + 1), max_size=3),
                         st.tuples(values(schema["items"], named, depth + 1)))
    if kind == "map":
        return st.dictionaries(st.text(max_size=3), values(schema["values"], named, depth + 1),
                               max_size=3)
    return _valid(kind, named, depth)


def _drop_one(record: dict[str, Any]) -> dict[str, Any]:
    return dict(list(record.items())[1:])


def fastavro_bytes(schema: Schema, record: Any) -> bytes | type[BaseException]:
    try:
        return codec.encode(schema.parsed, schema.fingerprint, record)
    except Exception as exc:  # noqa: BLE001 - the exception type is the expectation
        return type(exc)


def ours(schema: Schema, record: Any) -> bytes | type[BaseException]:
    try:
        return schema.encode(record)
    except Exception as exc:  # noqa: BLE001 - compared with fastavro's
        return type(exc)


@pytest.mark.parametrize("name", ALL_SCHEMAS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(data=st.data())
def test_same_bytes_or_same_failure_as_fastavro(name: str, data: st.DataObject) -> None:
    schema = REGISTRY.get(name)
    named = dict(schema.parsed.get("__named_schemas", {}))
    record = data.draw(values(schema.raw, named) if data.draw(st.booleans())
                       else _valid(schema.raw, named, 0))
    assert ours(schema, record) == fastavro_bytes(schema, record)


@pytest.mark.parametrize("name", ALL_SCHEMAS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_valid_records_take_the_fast_path(name: str, data: st.DataObject) -> None:
    """Records of exactly the expected types never need fastavro (or it would be slow)."""
    schema = REGISTRY.get(name)
    record = data.draw(exact(schema.raw, dict(schema.parsed.get("__named_schemas", {}))))
    out: list[bytes] = []
    compile_writer(schema.parsed)(record, out)
    expected = io.BytesIO()
    fastavro.schemaless_writer(expected, schema.parsed, record)
    assert b"".join(out) == expected.getvalue()


def exact(schema: Any, named: dict[str, Any]) -> Strategy:
    if isinstance(schema, list):
        others = [b for b in schema if b != "null"]
        return st.one_of(st.none(), exact(others[0], named))
    if isinstance(schema, str):
        if schema in named:
            return exact(named[schema], named)
        return _valid(schema, named, 0).filter(lambda v: schema != "float" or not math.isnan(v))
    logical = schema.get("logicalType")
    if logical == "timestamp-millis":
        return st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1),
                            timezones=st.just(UTC))
    if logical == "date":
        return st.dates()
    if logical == "uuid":
        return st.uuids()
    kind = schema["type"]
    if kind == "record":
        return st.fixed_dictionaries({f["name"]: exact(f["type"], named)
                                      for f in schema["fields"]})
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "array":
        return st.lists(exact(schema["items"], named), max_size=3)
    if kind == "map":
        return st.dictionaries(st.text(max_size=3), exact(schema["values"], named), max_size=3)
    return exact(kind, named)


def test_cached_strings_stay_correct_when_the_cache_is_full() -> None:
    schema = REGISTRY.get("records.audit_entry")
    write = compile_writer(schema.parsed, cache_strings=True)
    for i in range(300):
        record = _audit_record(purpose=f"purpose-{i % 100}", fields=[f"f{i % 90}", "x"])
        out: list[bytes] = []
        write(record, out)
        assert b"".join(out) == fastavro_bytes(schema, record)[10:]  # type: ignore[index]


def _audit_record(purpose: str, fields: list[str]) -> dict[str, Any]:
    return {"seq": 1, "prev_hash": "0" * 64, "logged_at": 1, "name": "decide", "status": "OK",
            "trace_id": "t", "span_id": "s", "parent_span_id": None, "foreign_trace_id": None,
            "foreign_span_id": None, "start_time": 2, "end_time": 2, "covenant_id": "c",
            "covenant_version": 1, "purpose": purpose, "legal_basis": "l", "recipient": "r",
            "data_subjects": [], "decision": None, "reason_code": None, "reason": None,
            "fields_released": fields, "fields_withheld": [], "policy_hash": None,
            "source": None, "event_type": None, "event_id": None, "event_offset": None,
            "egress_offset": None, "delivered_commitment": None, "detail": {"k": "v"}}


@pytest.mark.parametrize("n", [0, 1, -1, 63, -64, 64, 8191, 8192, -8193, 2**20 - 1, 2**20,
                               -(2**20), -(2**20) - 1, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63)])
def test_zigzag_is_avro_long(n: int) -> None:
    expected = io.BytesIO()
    fastavro.schemaless_writer(expected, "long", n)
    assert zigzag(n) == expected.getvalue()


@given(n=st.one_of(st.integers(-(2**22), 2**22), st.integers(-(2**63), 2**63 - 1)))
def test_zigzag_is_avro_long_everywhere(n: int) -> None:
    expected = io.BytesIO()
    fastavro.schemaless_writer(expected, "long", n)
    assert zigzag(n) == expected.getvalue()


def test_outside_the_fast_path_is_a_fallback_not_a_guess() -> None:
    write = compile_writer(fastavro.parse_schema(
        {"type": "record", "name": "r", "fields": [
            {"name": "a", "type": ["null", "string", "long"]},
            {"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "d", "type": {"type": "int", "logicalType": "date"}},
            {"name": "u", "type": {"type": "string", "logicalType": "uuid"}}]}))
    for record in ({"a": "x", "t": 0, "d": 0, "u": "x"},  # a three-branch union
                   {"a": None, "t": datetime(2026, 1, 1), "d": 0, "u": "x"},
                   {"a": None, "t": 0, "d": datetime(2026, 1, 1, tzinfo=UTC), "u": "x"},
                   {"a": None, "t": True, "d": date(2026, 1, 1), "u": uuid.uuid4()}):
        with pytest.raises(Fallback):
            write(record, [])
