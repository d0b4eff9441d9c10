"""Kafka egress records, without Kafka: what the key, value and headers of a released view
and of its tombstone hold, and the sealed broker_link header (issue 12, item 1).

A recipient must not be able to link records across purposes from anything on its topic:
the broker's own link back to the store (the event's position, the ended offset) is sealed
under a random nonce per record and bound to the topic.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.backends.kafka.egress import (
    LINK_HEADER,
    EgressLink,
    Link,
    egress_headers,
    egress_key,
    egress_value,
    to_egress_record,
)
from broker.backends.kafka.io import Header
from broker.errors import StorageError
from broker.pipeline.port import NewEgress

KEY = bytes(range(32))
TOPIC = "covenant.egress.preventie.slachtoffer-preventieadvies"
REF = "0123456789abcdef0123456789abcdef"


@dataclass
class FakeRecord:  # the fields of a kafka-python ConsumerRecord the backend reads
    topic: str
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[Header]


def released(event_offset: int = 41, expires: date | None = None) -> NewEgress:
    return NewEgress("preventie", "slachtoffer-preventieadvies", "politie.woninginbraak",
                     "record", b"\xc3\x01view-bytes", event_offset, REF, expires, 1_700_000,
                     {"name": "decide"})


def tombstone(event_offset: int = 41, cause: str = "erasure") -> NewEgress:
    return NewEgress("preventie", "slachtoffer-preventieadvies", "politie.woninginbraak",
                     "tombstone", b"\xc3\x01tombstone-bytes", event_offset, REF, None,
                     1_800_000, {"name": "tombstone", "detail": {"cause": cause,
                                                                 "released_offset": "3"}},
                     tombstone_for=3)


def as_record(eg: NewEgress, offset: int, link: EgressLink, topic: str = TOPIC) -> FakeRecord:
    return FakeRecord(topic, offset, egress_key(eg), egress_value(eg),
                      egress_headers(eg, topic, "views.slachtoffer_preventieadvies", link))


def test_a_released_view_is_keyed_by_its_ref_with_only_its_own_headers() -> None:
    link = EgressLink(KEY)
    record = as_record(released(expires=date(2026, 7, 31)), 3, link)
    assert record.key == REF.encode()
    assert record.value == b"\xc3\x01view-bytes"  # the view itself, not an envelope
    names = [name for name, _ in record.headers]
    assert names == ["view", "kind", "released_ms", "expires_on", LINK_HEADER]
    clear = dict(record.headers)
    assert clear["view"] == b"views.slachtoffer_preventieadvies"
    assert clear["expires_on"] == b"2026-07-31"
    # the store position is in no header in clear (it is the same on every stream)
    assert b"41" not in b"".join(v for k, v in record.headers if k != LINK_HEADER)
    back = to_egress_record(record, "preventie", "slachtoffer-preventieadvies", link)
    assert (back.event_offset, back.event_type, back.ref, back.kind, back.payload) == (
        41, "politie.woninginbraak", REF, "record", b"\xc3\x01view-bytes")
    assert back.expires_on == date(2026, 7, 31)


@pytest.mark.parametrize(("cause", "shown"), [("erasure", b"erased"), ("expired", b"expired")])
def test_a_tombstone_is_a_kafka_tombstone_with_its_cause(cause: str, shown: bytes) -> None:
    link = EgressLink(KEY)
    record = as_record(tombstone(cause=cause), 9, link)
    assert record.value is None
    assert record.key == REF.encode()  # the key of the record it ends: compaction drops it
    assert dict(record.headers)["cause"] == shown
    assert dict(record.headers)["kind"] == b"tombstone"
    back = to_egress_record(record, "preventie", "slachtoffer-preventieadvies", link)
    # consume renders the records.tombstone payload the broker kept in the sealed link
    assert (back.kind, back.payload, back.event_offset) == (
        "tombstone", b"\xc3\x01tombstone-bytes", 41)
    assert link.open(TOPIC, dict(record.headers)[LINK_HEADER]).tombstone_for == 3


def test_the_same_event_on_two_streams_shares_no_link_bytes() -> None:
    link = EgressLink(KEY)
    one = dict(as_record(released(), 0, link).headers)[LINK_HEADER]
    two = dict(as_record(released(), 0, link, "covenant.egress.x.y").headers)[LINK_HEADER]
    again = dict(as_record(released(), 0, link).headers)[LINK_HEADER]
    assert len({one, two, again}) == 3  # a random nonce per record
    assert len(one) == len(two)  # padded: the length says nothing either


def test_a_link_opens_only_on_its_topic_and_under_its_key() -> None:
    sealed = EgressLink(KEY).seal(TOPIC, Link(7, "om.gebiedsverbod"))
    with pytest.raises(StorageError, match="egress-link key"):
        EgressLink(KEY).open("covenant.egress.other.topic", sealed)  # copied elsewhere
    with pytest.raises(StorageError, match="egress-link key"):
        EgressLink(secrets.token_bytes(32)).open(TOPIC, sealed)


def test_a_record_without_a_ref_cannot_be_keyed() -> None:
    eg = released()
    eg.ref = None
    with pytest.raises(ValueError, match="without a ref"):
        egress_key(eg)


@given(offset=st.integers(min_value=0, max_value=2**62),
       ended=st.none() | st.integers(min_value=0, max_value=2**62),
       payload=st.none() | st.binary(max_size=300),
       event_type=st.text(min_size=1, max_size=40))
def test_seal_then_open_gives_the_link_back(offset: int, ended: int | None,
                                             payload: bytes | None, event_type: str) -> None:
    link = EgressLink(KEY)
    value = Link(offset, event_type, ended, payload)
    assert link.open(TOPIC, link.seal(TOPIC, value)) == value


@given(garbage=st.binary(max_size=200))
def test_a_header_a_recipient_forged_is_refused_not_trusted(garbage: bytes) -> None:
    """Anyone who can write the topic (an operator, a compromised tool) could put bytes in
    the header; they never open into a link the broker would act on."""
    with pytest.raises(StorageError):
        EgressLink(KEY).open(TOPIC, garbage)


def test_tampering_with_one_bit_is_refused() -> None:
    link = EgressLink(KEY)
    sealed = bytearray(link.seal(TOPIC, Link(7, "om.gebiedsverbod")))
    sealed[20] ^= 1
    with pytest.raises(StorageError):
        link.open(TOPIC, bytes(sealed))
