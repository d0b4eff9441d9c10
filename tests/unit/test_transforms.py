"""Field transforms: keep, hour, day, year, postcode4, pseudonymise, mask.

Expected values are worked out by hand from the calendar (CET/CEST switch dates of
Europe/Amsterdam) and from HMAC-SHA256 computed here, not by calling the code under test.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.policy.transforms import (
    compile_transform,
    keep,
    mask,
    postcode4,
    pseudonymise,
    to_day,
    to_hour,
    to_year,
)

AMS = ZoneInfo("Europe/Amsterdam")
KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# -- keep ------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [None, "", "Stationsstraat", 0, False, True,
                                   ["a", "b"], {"wijken": ["noord"], "streets": []},
                                   date(2026, 5, 1), utc("2026-05-01T12:34:56.789")])
def test_keep_returns_the_value_itself(value: object) -> None:
    assert keep(value) is value


# -- hour ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("instant", "expected"), [
    ("2026-05-01T12:34:56.789", "2026-05-01T12:00:00"),
    ("2026-05-01T12:00:00", "2026-05-01T12:00:00"),
    ("2026-05-01T12:59:59.999", "2026-05-01T12:00:00"),
    ("2026-05-01T00:00:00.001", "2026-05-01T00:00:00"),
    ("2026-12-31T23:59:59.999", "2026-12-31T23:00:00"),
    # 2026-03-29 01:00Z: CET becomes CEST; the instant keeps its UTC hour.
    ("2026-03-29T01:30:00", "2026-03-29T01:00:00"),
    # 2026-10-25 01:00Z: CEST becomes CET (local 02:00-03:00 happens twice).
    ("2026-10-25T00:45:00", "2026-10-25T00:00:00"),
    ("2026-10-25T01:45:00", "2026-10-25T01:00:00"),
])
def test_hour_cuts_an_instant_to_its_hour(instant: str, expected: str) -> None:
    result = to_hour(utc(instant))
    assert result == utc(expected)
    assert result.tzinfo is not None


def test_hour_of_none_is_none() -> None:
    assert to_hour(None) is None


@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 31, 22),
                    timezones=st.just(UTC)))
def test_hour_never_moves_forward_and_loses_less_than_an_hour(instant: datetime) -> None:
    result = to_hour(instant)
    assert result <= instant
    assert (instant - result).total_seconds() < 3600
    assert (result.minute, result.second, result.microsecond) == (0, 0, 0)


# -- day -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("instant", "expected"), [
    # winter (CET, UTC+1): local midnight is 23:00Z the day before
    ("2026-01-15T22:59:59.999", date(2026, 1, 15)),
    ("2026-01-15T23:00:00", date(2026, 1, 16)),
    # summer (CEST, UTC+2): local midnight is 22:00Z the day before
    ("2026-05-31T21:59:59.999", date(2026, 5, 31)),
    ("2026-05-31T22:00:00", date(2026, 6, 1)),
    ("2026-05-31T22:30:00", date(2026, 6, 1)),
    # the night CET becomes CEST (2026-03-29): still UTC+1 at the midnight before it...
    ("2026-03-28T22:59:59.999", date(2026, 3, 28)),
    ("2026-03-28T23:00:00", date(2026, 3, 29)),
    # ...and UTC+2 at the midnight after it
    ("2026-03-29T21:59:59.999", date(2026, 3, 29)),
    ("2026-03-29T22:00:00", date(2026, 3, 30)),
    # the night CEST becomes CET (2026-10-25): UTC+2 before, UTC+1 after
    ("2026-10-24T21:59:59.999", date(2026, 10, 24)),
    ("2026-10-24T22:00:00", date(2026, 10, 25)),
    ("2026-10-25T22:59:59.999", date(2026, 10, 25)),
    ("2026-10-25T23:00:00", date(2026, 10, 26)),
    # new year's eve: the covenant's last local day
    ("2026-12-31T22:59:59.999", date(2026, 12, 31)),
    ("2026-12-31T23:00:00", date(2027, 1, 1)),
])
def test_day_is_the_calendar_date_in_amsterdam(instant: str, expected: date) -> None:
    assert to_day(AMS)(utc(instant)) == expected


def test_day_follows_the_zone_it_was_compiled_with() -> None:
    instant = utc("2026-05-31T22:30:00")
    assert to_day(ZoneInfo("UTC"))(instant) == date(2026, 5, 31)
    assert to_day(AMS)(instant) == date(2026, 6, 1)
    assert to_day(ZoneInfo("America/New_York"))(utc("2026-06-01T03:59:00")) == date(2026, 5, 31)


def test_day_keeps_a_date_and_passes_none() -> None:
    assert to_day(AMS)(date(2026, 2, 28)) == date(2026, 2, 28)
    assert to_day(AMS)(None) is None


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(9998, 12, 31),
                    timezones=st.just(UTC)))
def test_day_agrees_with_the_local_wall_clock(instant: datetime) -> None:
    result = to_day(AMS)(instant)
    assert isinstance(result, date)
    assert not isinstance(result, datetime)
    local = instant.astimezone(AMS)
    assert result == date(local.year, local.month, local.day)
    # the local date is never more than a day away from the UTC date
    assert abs((result - instant.date()).days) <= 1


# -- year ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "expected"), [
    (utc("2026-06-15T12:00:00"), 2026),
    (utc("2026-12-31T22:59:59.999"), 2026),
    (utc("2026-12-31T23:00:00"), 2027),  # already new year in Amsterdam
    (date(1984, 12, 31), 1984),
    (None, None),
    ("2026", None),  # not an instant or a date: null, never the value
])
def test_year(value: object, expected: int | None) -> None:
    assert to_year(AMS)(value) == expected


# -- postcode4 -------------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "expected"), [
    ("1181 ZM", "1181"),
    ("1181ZM", "1181"),
    ("1181 zm", "1181"),
    ("1181zm", "1181"),
    (" 1181 ZM ", "1181"),
    ("9999 XX", "9999"),
    ("1000 AA", "1000"),
    (None, None),
    ("", None),
    ("   ", None),
    ("ZM 1181", None),
    ("abcd EF", None),
    ("118 ZM", None),
    ("Stationsstraat 12", None),
])
def test_postcode4(value: str | None, expected: str | None) -> None:
    assert postcode4(value) == expected


@pytest.mark.parametrize("garbage", ["12345", "1181 garbage", "1181ZMX", "1181-ZM",
                                     "\u0661\u0661\u0668\u0661 ZM"])
def test_postcode4_of_garbage_with_four_leading_digits_is_null(garbage: str) -> None:
    assert postcode4(garbage) is None


@given(st.text(alphabet="0123456789 AZmz-", max_size=10))
def test_postcode4_never_returns_more_than_the_leading_four_digits(value: str) -> None:
    result = postcode4(value)
    assert result is None or (result == value.strip()[:4] and result.isdigit())


@given(st.integers(1000, 9999), st.sampled_from(["", " "]),
       st.text(alphabet="ABCDEFGHJKLMNPRSTVWXZabcdefghjklmnprstvwxz", min_size=2, max_size=2))
def test_postcode4_of_every_dutch_postcode_is_its_digits(digits: int, space: str,
                                                          letters: str) -> None:
    assert postcode4(f"{digits}{space}{letters}") == str(digits)


# -- pseudonymise ----------------------------------------------------------------------------
EVENT_ID = "6f1c2a8e-0b1d-4c3e-9f2a-1234567890ab"


def test_pseudonym_is_truncated_hmac_sha256_under_the_purpose_key() -> None:
    expected = hmac.new(KEY_A, EVENT_ID.encode(), hashlib.sha256).hexdigest()[:32]
    assert pseudonymise(KEY_A)(EVENT_ID) == expected
    assert len(expected) == 32


def test_pseudonym_is_stable_under_the_same_key() -> None:
    first, second = pseudonymise(KEY_A), pseudonymise(bytes(KEY_A))
    assert first(EVENT_ID) == first(EVENT_ID) == second(EVENT_ID)


def test_pseudonyms_differ_across_purpose_keys() -> None:
    assert pseudonymise(KEY_A)(EVENT_ID) != pseudonymise(KEY_B)(EVENT_ID)


def test_pseudonym_of_a_uuid_object_equals_that_of_its_canonical_text() -> None:
    # decoded events carry uuid.UUID, JSON input carries text: the reference must not change
    assert pseudonymise(KEY_A)(uuid.UUID(EVENT_ID)) == pseudonymise(KEY_A)(EVENT_ID)


def test_pseudonym_of_none_is_none() -> None:
    assert pseudonymise(KEY_A)(None) is None


def test_pseudonym_via_compile_transform_asks_for_the_key_once() -> None:
    calls: list[int] = []

    def key() -> bytes:
        calls.append(1)
        return KEY_B

    transform = compile_transform("pseudonymise", zone=AMS, key=key, keep_last=None)
    assert transform("BOA1234") == hmac.new(KEY_B, b"BOA1234", hashlib.sha256).hexdigest()[:32]
    transform("BOA5678")
    assert calls == [1]


@given(st.text(min_size=1, max_size=30), st.text(min_size=1, max_size=30))
def test_pseudonyms_are_hex_and_hide_the_value(a: str, b: str) -> None:
    pa, pb = pseudonymise(KEY_A)(a), pseudonymise(KEY_A)(b)
    assert len(pa) == 32
    assert set(pa) <= set("0123456789abcdef")
    assert (pa == pb) == (a == b)
    assert pa != pseudonymise(KEY_B)(a)


# -- mask ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("keep_last", "value", "expected"), [
    (0, "0612345678", "**********"),
    (4, "0612345678", "******5678"),
    (1, "AB-123-C", "*******C"),
    (4, "abcd", "abcd"),
    (4, "", ""),
    (3, 123456789, "******789"),  # non-strings are masked as their text
    (2, None, None),
])
def test_mask(keep_last: int, value: object, expected: str | None) -> None:
    assert mask(keep_last)(value) == expected


def test_mask_via_compile_transform_defaults_to_masking_everything() -> None:
    transform = compile_transform("mask", zone=AMS, key=lambda: KEY_A, keep_last=None)
    assert transform("secret") == "******"


@pytest.mark.parametrize("keep_last", [4, 5])
def test_mask_keeps_a_short_value_clear_when_keep_last_exceeds_it(keep_last: int) -> None:
    assert mask(keep_last)("abc") == "abc"


@given(st.integers(0, 12), st.text(max_size=12))
def test_mask_keeps_length_and_clears_only_the_last_characters(keep_last: int,
                                                               value: str) -> None:
    result = mask(keep_last)(value)
    assert len(result) == len(value)
    if keep_last <= len(value):
        assert result == "*" * (len(value) - keep_last) + value[len(value) - keep_last:]


def test_compile_transform_refuses_an_unknown_name() -> None:
    with pytest.raises(ValueError, match="unknown transform 'blur'"):
        compile_transform("blur", zone=AMS, key=lambda: KEY_A, keep_last=None)
