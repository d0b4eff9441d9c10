"""Clear reasons at the door (issue 12, item 5): what a source sent wrongly, and what to send.

Confluent-framed input (magic byte 0x00, a 4-byte schema id) has its own reason code; an
unknown fingerprint's reason names the fingerprints the declared type may carry and the
logical-type pitfall of the Apache `avro` Python package. And no byte string, framed or
not, makes triage raise: every input is stored or quarantined.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.app.service import Broker
from broker.clock import parse_instant
from broker.config import load_settings
from broker.errors import InvalidEvent
from broker.model import codec
from broker.model.json_input import Limits, convert
from broker.pipeline.ingest import validate
from tests import factories as f
from tests.unit.strategies import REGISTRY

NOW = parse_instant("2026-05-10T12:00:00Z")
BURGLARY = REGISTRY.get("politie.woninginbraak")


def _avro_burglary() -> bytes:
    return BURGLARY.encode(convert(BURGLARY.raw, f.woninginbraak(), Limits()).record)


def _confluent(schema_id: int, body: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", schema_id) + body


def _refusal(raw: bytes, declared: str = "politie.woninginbraak") -> InvalidEvent:
    with pytest.raises(InvalidEvent) as caught:
        validate(raw, declared.partition(".")[0], declared, REGISTRY, Limits())
    return caught.value


@pytest.mark.parametrize("body", [_avro_burglary()[codec.HEADER_SIZE:],  # Avro body
                                  b'{"event_id": "x"}',  # JSON behind the frame
                                  b"\xff\xfe\x80", b""])
def test_confluent_framed_input_has_its_own_reason_saying_what_to_send(body: bytes) -> None:
    refused = _refusal(_confluent(42, body))
    assert refused.code == "confluent_framing"
    assert "schema id 42" in refused.reason
    assert "C3 01" in refused.reason
    assert "single-object" in refused.reason
    assert "JSON" in refused.reason
    assert "schemas list" in refused.reason


def test_confluent_framed_input_is_quarantined_as_such_by_the_embedded_ingest(
        broker: Broker) -> None:
    report = broker.ingest("politie", "politie.woninginbraak",
                           [("m1", _confluent(7, _avro_burglary()[codec.HEADER_SIZE:]))], NOW)
    assert [q.reason_code for q in report.quarantined] == ["confluent_framing"]


def test_an_unknown_fingerprint_lists_the_known_ones_of_the_declared_type() -> None:
    unknown = codec.MARKER + b"\x11" * 8 + _avro_burglary()[codec.HEADER_SIZE:]
    refused = _refusal(unknown)
    assert refused.code == "unknown_schema"
    assert refused.reason.startswith("unknown schema fingerprint 1111111111111111; ")
    known = REGISTRY.fingerprints_of("politie.woninginbraak")
    assert known[0] == ("current", BURGLARY)
    for _, schema in known:
        assert schema.fingerprint.hex() in refused.reason
    assert "Apache `avro` Python package" in refused.reason
    assert "logicalType" in refused.reason
    # only the declared type's fingerprints: a source learns nothing of the others
    assert REGISTRY.get("om.gebiedsverbod").fingerprint.hex() not in refused.reason


def test_history_fingerprints_are_listed_after_the_current_one() -> None:
    with_history = sorted({s.name for s in REGISTRY.history.values()
                           if REGISTRY.by_name[s.name].kind == "events"})
    assert with_history, "the schema history fixtures hold an older event schema"
    known = REGISTRY.fingerprints_of(with_history[0])
    assert [label for label, _ in known][:2] == ["current", "history"]
    refused = _refusal(codec.MARKER + b"\x22" * 8 + b"\x00", with_history[0])
    for _, schema in known:
        assert schema.fingerprint.hex() in refused.reason


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    data = Path(tmp_path_factory.mktemp("door")) / "data"
    broker = Broker(load_settings(overrides={"data_dir": data}, environ={}))
    yield broker
    broker.close()


FRAMED = (st.binary(max_size=300)
          | st.binary(max_size=300).map(lambda b: b"\x00" + b)  # Confluent-like
          | st.tuples(st.sampled_from([s.fingerprint for s in REGISTRY.by_name.values()]
                                      + [b"\x00" * 8]),
                      st.binary(max_size=300)).map(lambda t: codec.MARKER + t[0] + t[1]))


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(FRAMED, min_size=1, max_size=4),
       st.sampled_from(["politie.woninginbraak", "om.gebiedsverbod"]))
def test_no_byte_string_makes_triage_raise(door: Broker, inputs: list[bytes],
                                           declared: str) -> None:
    report = door.ingest(declared.partition(".")[0], declared,
                         [(f"m{i}", raw) for i, raw in enumerate(inputs)], NOW)
    assert report.accepted + len(report.quarantined) == len(inputs)
    assert all(q.reason for q in report.quarantined)
