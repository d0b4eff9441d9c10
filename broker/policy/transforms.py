"""Field transforms: each compiles once into a plain function value -> value.

None passes through unchanged (a null source gives a null output). A transform never
raises on a value of the type its schema allows.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from collections.abc import Callable
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

Transform = Callable[[Any], Any]
_POSTCODE = re.compile(r"^\s*([1-9][0-9]{3})\s?[A-Za-z]{2}\s*$", re.ASCII)


def keep(value: Any) -> Any:
    return value


def to_hour(value: Any) -> Any:
    if value is None:
        return None
    return value.replace(minute=0, second=0, microsecond=0)


def to_day(zone: ZoneInfo) -> Transform:
    """An instant becomes its calendar date in the covenant's zone; a date stays."""

    def day(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.astimezone(zone).date()
        return value

    return day


def to_year(zone: ZoneInfo) -> Transform:
    def year(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.astimezone(zone).year
        if isinstance(value, date):
            return value.year
        return None

    return year


def postcode4(value: Any) -> Any:
    """Dutch postcode to its four digits ("1181 ZM" -> "1181"); anything else to null."""
    if value is None:
        return None
    match = _POSTCODE.match(value)
    return match.group(1) if match else None


def pseudonymise(key: bytes) -> Transform:
    """HMAC-SHA256 under the purpose's key, 128 bits in hex (the keyed HMAC set up once)."""
    base = hmac.new(key, digestmod=hashlib.sha256)

    def pseudonym(value: Any) -> Any:
        if value is None:
            return None
        text = str(value) if isinstance(value, uuid.UUID | int) else value
        mac = base.copy()
        mac.update(str(text).encode("utf-8"))
        return mac.hexdigest()[:32]

    return pseudonym


def mask(keep_last: int) -> Transform:
    def masked(value: Any) -> Any:
        if value is None:
            return None
        text = str(value)
        clear = text[-keep_last:] if keep_last else ""
        return "*" * (len(text) - len(clear)) + clear

    return masked


def compile_transform(
    name: str, *, zone: ZoneInfo, key: Callable[[], bytes], keep_last: int | None
) -> Transform:
    if name == "keep":
        return keep
    if name == "hour":
        return to_hour
    if name == "day":
        return to_day(zone)
    if name == "year":
        return to_year(zone)
    if name == "postcode4":
        return postcode4
    if name == "pseudonymise":
        return pseudonymise(key())
    if name == "mask":
        return mask(keep_last or 0)
    raise ValueError(f"unknown transform {name!r}")
