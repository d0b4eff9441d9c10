"""Avro single-object encoding: C3 01, the CRC-64-AVRO fingerprint, the payload, nothing else.

Anchors independent of the code under test: fastavro's own fingerprint and writer, and
the fingerprints the Avro specification's test suite lists for primitive schemas.
"""

from __future__ import annotations

import io
import json
import struct
from typing import Any

import fastavro
import pytest
from fastavro.schema import fingerprint as fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form
from hypothesis import given, settings

from broker.errors import InvalidEvent
from broker.model import codec
from broker.model.json_input import Limits
from broker.pipeline.ingest import validate
from tests import factories as f
from tests.unit import strategies as gen
from tests.unit.strategies import REGISTRY

ALL_SCHEMAS = sorted(REGISTRY.by_name)
BURGLARY = REGISTRY.get("politie.woninginbraak")


def record_of(event: dict[str, Any], event_type: str = "politie.woninginbraak") -> dict[str, Any]:
    source = event_type.split(".", 1)[0]
    return validate(json.dumps(event).encode(), source, event_type, REGISTRY, Limits()).record


# Avro's share/test/data/schema-tests.txt: (canonical form, 64-bit fingerprint as signed long)
SPEC_VECTORS = [('"null"', 7195948357588979594), ('"boolean"', -6970731678124411036),
                ('"int"', 8247732601305521295), ('"long"', -3434872931120570953),
                ('"string"', -8142146995180207161)]


@pytest.mark.parametrize(("canonical", "expected"), SPEC_VECTORS)
def test_crc64_avro_matches_the_avro_specification(canonical: str, expected: int) -> None:
    assert codec.crc64_avro(canonical.encode()) == expected & 0xFFFF_FFFF_FFFF_FFFF
    # the header carries the fingerprint little-endian
    assert codec.fingerprint(canonical) == struct.pack("<q", expected)


@pytest.mark.parametrize("name", ALL_SCHEMAS)
def test_header_fingerprint_equals_fastavros_crc64_avro(name: str) -> None:
    schema = REGISTRY.get(name)
    expected = bytes.fromhex(fastavro_fingerprint(to_parsing_canonical_form(schema.raw),
                                                  "CRC-64-AVRO"))
    assert schema.fingerprint == expected
    assert REGISTRY.by_fingerprint[expected] is schema


def test_encoding_is_marker_fingerprint_then_the_fastavro_payload() -> None:
    record = record_of(f.woninginbraak())
    data = BURGLARY.encode(record)
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == bytes.fromhex(fastavro_fingerprint(
        to_parsing_canonical_form(BURGLARY.raw), "CRC-64-AVRO"))
    plain = io.BytesIO()
    fastavro.schemaless_writer(plain, fastavro.parse_schema(BURGLARY.raw), record)
    assert data[10:] == plain.getvalue()
    assert codec.split_header(data) == (data[2:10], data[10:])


def test_round_trip_through_the_schema_and_the_registry() -> None:
    record = record_of(f.woninginbraak())
    data = BURGLARY.encode(record)
    decoded = BURGLARY.decode(data)
    assert decoded == {**record, "event_id": decoded["event_id"]}
    assert str(decoded["event_id"]) == record["event_id"]
    schema, again = REGISTRY.decode_single_object(data)
    assert schema is BURGLARY
    assert again == decoded


@pytest.mark.parametrize("trailer", [b"\x00", b"extra", b"\xc3\x01"])
def test_trailing_bytes_are_rejected(trailer: bytes) -> None:
    data = BURGLARY.encode(record_of(f.woninginbraak())) + trailer
    with pytest.raises(ValueError, match=f"{len(trailer)} trailing bytes after the record"):
        BURGLARY.decode(data)
    with pytest.raises(InvalidEvent) as caught:
        REGISTRY.decode_single_object(data)
    assert caught.value.code == "undecodable"


def test_truncated_payload_is_undecodable() -> None:
    data = BURGLARY.encode(record_of(f.woninginbraak()))
    with pytest.raises(InvalidEvent) as caught:
        REGISTRY.decode_single_object(data[:-3])
    assert caught.value.code == "undecodable"
    assert caught.value.reason.startswith("payload does not decode as politie.woninginbraak")


@pytest.mark.parametrize("data", [b"", b"\xc3", b"\xc3\x01\x00", b"\xc3\x01" + b"\x00" * 7,
                                  b"{\"event_id\": 1}", b"\xc3\x02" + b"\x00" * 20,
                                  b"\x01\xc3" + b"\x00" * 20])
def test_bad_framing(data: bytes) -> None:
    assert codec.split_header(data) is None
    with pytest.raises(InvalidEvent) as caught:
        REGISTRY.decode_single_object(data)
    assert caught.value.code == "bad_framing"


def test_unknown_fingerprint() -> None:
    data = b"\xc3\x01" + b"\xff" * 8 + b"\x00"
    with pytest.raises(InvalidEvent) as caught:
        REGISTRY.decode_single_object(data)
    assert (caught.value.code, caught.value.reason) == (
        "unknown_schema", "unknown schema fingerprint ffffffffffffffff")


def test_only_event_types_decode_as_events() -> None:
    """A view or record message is known, but it is not an event a source may send."""
    view = REGISTRY.get("views.preventie_woninginbraak")
    data = view.encode({"ref": "0" * 32, "street": "s", "postcode4": None, "wijk": "noord",
                        "date": 20_000, "modus_operandi": "overig", "attempt": True})
    assert view.decode(data)["wijk"] == "noord"
    with pytest.raises(InvalidEvent) as caught:
        REGISTRY.decode_single_object(data)
    assert caught.value.code == "unknown_schema"


def test_decoding_with_the_wrong_schema_is_refused() -> None:
    data = BURGLARY.encode(record_of(f.woninginbraak()))
    ban = REGISTRY.get("om.gebiedsverbod")
    with pytest.raises(ValueError, match=r"not a single-object encoded om\.gebiedsverbod"):
        ban.decode(data)


def test_encoding_refuses_a_record_that_does_not_fit() -> None:
    record = record_of(f.woninginbraak())
    record["modus_operandi"] = "niet-bestaand"
    with pytest.raises(ValueError, match="is not in list"):
        BURGLARY.encode(record)


@settings(max_examples=60)
@given(gen.any_event())
def test_every_valid_event_round_trips(typed_event: tuple[str, dict[str, Any]]) -> None:
    event_type, event = typed_event
    schema = REGISTRY.get(event_type)
    data = schema.encode(record_of(event, event_type))
    assert data[:2] == codec.MARKER
    assert data[2:10] == schema.fingerprint
    found, decoded = REGISTRY.decode_single_object(data)
    assert found is schema
    assert schema.encode(decoded) == data  # decode then encode is the identity on bytes
