"""Time: the decision clock, instants as UTC epoch milliseconds, and calendar dates.

All instants are UTC. Calendar comparisons (date windows, covenant validity) use the
decision time's calendar date in the covenant's time zone.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from broker.errors import InputError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_instant(text: str) -> datetime:
    """Parse an ISO-8601 instant that carries a zone or offset; naive times are refused."""
    try:
        value = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError as exc:
        raise InputError(f"not an ISO-8601 instant: {text!r}") from exc
    if value.tzinfo is None or value.utcoffset() is None:
        raise InputError(f"instant {text!r} has no zone or offset; add Z or +01:00")
    return value.astimezone(UTC)


def now_utc() -> datetime:
    return datetime.now(UTC)


def to_millis(value: datetime) -> int:
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def from_millis(millis: int) -> datetime:
    """Exact for every millisecond (a float division loses them past the year 2242)."""
    return EPOCH + timedelta(milliseconds=millis)


def local_date(instant: datetime, zone: ZoneInfo) -> date:
    """The calendar date of an instant in the given zone (Europe/Amsterdam for the sample)."""
    return instant.astimezone(zone).date()


def iso_instant(value: datetime) -> str:
    """Render an instant as ISO-8601 UTC with a Z, milliseconds only when present."""
    value = value.astimezone(UTC)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")
