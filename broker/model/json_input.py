"""JSON input to an event record, checked against the event type's Avro schema.

Timestamps arrive as ISO-8601 strings with a zone or offset, or as epoch milliseconds;
dates as YYYY-MM-DD. Unknown extra fields are dropped and reported by name (never by
value). Missing nullable fields become null; anything else that does not fit is an
InvalidEvent whose reason names the field and the rule, never the value.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from broker.clock import from_millis
from broker.errors import InvalidEvent

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# Accepted instants stop a day short of the calendar's end, so converting any of them to a
# local zone (transforms, date windows) cannot overflow in the pipeline after ingest.
MIN_MILLIS = 0
MAX_MILLIS = 253_402_214_399_999  # 9999-12-30T23:59:59.999Z
MIN_INSTANT = datetime(1970, 1, 1, tzinfo=UTC)
MAX_INSTANT = datetime(9999, 12, 30, 23, 59, 59, 999_000, tzinfo=UTC)


def check_instant(value: datetime, path: str) -> None:
    """The one range rule for instants, for JSON input and decoded Avro alike."""
    if not MIN_INSTANT <= value <= MAX_INSTANT:
        raise InvalidEvent("out_of_range", f"{path}: timestamp outside "
                           f"1970-01-01T00:00:00Z..9999-12-30T23:59:59.999Z")


class _Duplicated(dict[str, Any]):
    """An object in which `key` was written twice (JSON keeps the last one silently)."""

    key: str


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    marked, seen = _Duplicated(obj), set()
    for key, _ in pairs:
        if key in seen:
            marked.key = key
            break
        seen.add(key)
    return marked


def _duplicate_path(value: Any, path: str) -> str | None:
    """The dotted path of the first key written twice, depth first in document order."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:  # a loop, not recursion: the nesting depth is the input's
        node, where = stack.pop()
        if isinstance(node, _Duplicated):
            return f"{where}.{node.key}" if where else node.key
        if isinstance(node, dict):
            stack.extend((v, f"{where}.{k}" if where else k)
                         for k, v in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((v, f"{where}[{i}]") for i, v in reversed(list(enumerate(node))))
    return None


_MAX_REPORTED_PATH = 200  # characters; a key name is the sender's to choose, its length too


def loads_unique(text: str, **options: Any) -> Any:
    """json.loads that refuses a key written twice in any object, at any depth.

    Two `address` objects in one event would otherwise route it by the last one. The
    InvalidEvent (code duplicate_key) names the key's path, never a value.
    """
    value = json.loads(text, object_pairs_hook=_unique_object, **options)
    path = _duplicate_path(value, "")
    if path is None:
        return value
    if not _is_unicode(path):
        raise InvalidEvent("duplicate_key", "a field name (with a lone surrogate) is written "
                           "twice in one object")
    if len(path) > _MAX_REPORTED_PATH:
        path = path[:_MAX_REPORTED_PATH] + "…"
    raise InvalidEvent("duplicate_key", f"{path}: written twice in one object")


@dataclass(frozen=True)
class Limits:
    max_string_bytes: int = 16 * 1024
    max_event_bytes: int = 256 * 1024
    max_clock_skew_ms: int = 300_000


# A field whose schema entry says "x-past": true records when something happened (reported,
# occurred, decided, observed). Such an instant later than the ingest time plus the allowed
# clock skew is a sender's error or a forgery: in the year 9999 it would pass every max_age
# condition forever (a negative age). Instants that may lie ahead (none yet) and dates (a
# ban's valid_until) carry no mark and are not bounded.
PAST_MARK = "x-past"


def past_instant_paths(schema: dict[str, Any]) -> list[tuple[str, ...]]:
    """Paths of the x-past timestamp fields of a record schema, nested records included."""
    out: list[tuple[str, ...]] = []

    def walk(record: dict[str, Any], prefix: tuple[str, ...]) -> None:
        for f in record["fields"]:
            branches = f["type"] if isinstance(f["type"], list) else [f["type"]]
            for branch in branches:
                if not isinstance(branch, dict):
                    continue
                if branch.get("type") == "record":
                    walk(branch, (*prefix, f["name"]))
                elif f.get(PAST_MARK) is True and branch.get("logicalType") == "timestamp-millis":
                    out.append((*prefix, f["name"]))
    walk(schema, ())
    return out


def check_not_future(record: dict[str, Any], paths: list[tuple[str, ...]], now_ms: int,
                     max_skew_ms: int) -> None:
    """Refuse an x-past instant more than max_skew_ms after now_ms; names the field only."""
    bound = from_millis(now_ms + max_skew_ms)
    for path in paths:
        value: Any = record
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, datetime) and value > bound:
            raise InvalidEvent("from_the_future", f"{'.'.join(path)}: lies more than "
                               f"{max_skew_ms // 1000} s after the ingest time; it records "
                               f"when something happened")


@dataclass
class Conversion:
    record: dict[str, Any]
    dropped_fields: list[str] = field(default_factory=list)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(value), type(value).__name__)


class _Converter:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.dropped: list[str] = []

    def record(self, schema: dict[str, Any], value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise InvalidEvent("wrong_type", f"{path.rstrip('.') or 'event'}: expected an "
                               "object, got "
                               f"{_type_name(value)}")
        known = {f["name"] for f in schema["fields"]}
        unknown = [k for k in value if k not in known]
        if not all(_is_unicode(k) for k in unknown):  # its name would be reported
            raise InvalidEvent("invalid_unicode", f"{path.rstrip('.') or 'event'}: a field "
                               f"name contains a lone surrogate")
        self.dropped.extend(f"{path}{k}" for k in unknown)
        out: dict[str, Any] = {}
        for f in schema["fields"]:
            fpath = f"{path}{f['name']}"
            if f["name"] not in value:
                if _nullable(f["type"]):
                    out[f["name"]] = None
                    continue
                raise InvalidEvent("missing_field", f"{fpath}: required field is missing")
            out[f["name"]] = self.value(f["type"], value[f["name"]], fpath)
        return out

    def value(self, avro_type: Any, value: Any, path: str) -> Any:
        if isinstance(avro_type, list):
            if value is None:
                if "null" in avro_type:
                    return None
                raise InvalidEvent("wrong_type", f"{path}: may not be null")
            branches = [b for b in avro_type if b != "null"]
            if len(branches) != 1:
                raise InvalidEvent("unsupported_schema", f"{path}: ambiguous union")
            return self.value(branches[0], value, path)
        if value is None:
            raise InvalidEvent("wrong_type", f"{path}: may not be null")
        if isinstance(avro_type, dict):
            kind = avro_type["type"]
            logical = avro_type.get("logicalType")
            if kind == "record":
                return self.record(avro_type, value, f"{path}.")
            if kind == "enum":
                if not isinstance(value, str) or value not in avro_type["symbols"]:
                    raise InvalidEvent("wrong_value", f"{path}: not one of "
                                       f"{', '.join(avro_type['symbols'])}")
                return value
            if kind == "array":
                if not isinstance(value, list):
                    raise InvalidEvent("wrong_type", f"{path}: expected an array, got "
                                       f"{_type_name(value)}")
                return [self.value(avro_type["items"], v, f"{path}[{i}]")
                        for i, v in enumerate(value)]
            if logical == "timestamp-millis":
                return _timestamp(value, path)
            if logical == "date":
                return _date(value, path)
            if logical == "uuid":
                text = self.string(value, path)
                try:
                    parsed_uuid = uuid.UUID(text)
                except ValueError:
                    raise InvalidEvent("wrong_value", f"{path}: not a UUID") from None
                # canonical form, as Avro decoding gives it: uuid.UUID also takes braces,
                # urn:uuid: and stray hyphens, and the duplicate check compares text
                return str(parsed_uuid)
            return self.value(kind, value, path)
        return self.primitive(avro_type, value, path)

    def primitive(self, avro_type: str, value: Any, path: str) -> Any:
        if avro_type == "string":
            return self.string(value, path)
        if avro_type == "boolean":
            if not isinstance(value, bool):
                raise InvalidEvent("wrong_type", f"{path}: expected a boolean, got "
                                   f"{_type_name(value)}")
            return value
        if avro_type in ("int", "long"):
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidEvent("wrong_type", f"{path}: expected an integer, got "
                                   f"{_type_name(value)}")
            bits = 31 if avro_type == "int" else 63
            if not -(2**bits) <= value < 2**bits:
                raise InvalidEvent("out_of_range", f"{path}: integer out of range")
            return value
        if avro_type in ("float", "double"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidEvent("wrong_type", f"{path}: expected a number, got "
                                   f"{_type_name(value)}")
            if not math.isfinite(value):
                raise InvalidEvent("wrong_value", f"{path}: NaN and infinity are not allowed")
            return float(value)
        raise InvalidEvent("unsupported_schema", f"{path}: unsupported Avro type {avro_type}")

    def string(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise InvalidEvent("wrong_type", f"{path}: expected a string, got "
                               f"{_type_name(value)}")
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise InvalidEvent("invalid_unicode", f"{path}: contains a lone surrogate") from None
        if size > self.limits.max_string_bytes:
            raise InvalidEvent("field_too_large", f"{path}: {size} bytes, the limit is "
                               f"{self.limits.max_string_bytes}")
        return value


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _nullable(avro_type: Any) -> bool:
    return isinstance(avro_type, list) and "null" in avro_type


def _timestamp(value: Any, path: str) -> datetime:
    if isinstance(value, bool):
        raise InvalidEvent("wrong_type", f"{path}: expected a timestamp, got boolean")
    if isinstance(value, int):
        if not MIN_MILLIS <= value <= MAX_MILLIS:
            raise InvalidEvent("out_of_range", f"{path}: epoch milliseconds out of range")
        return from_millis(value)
    if not isinstance(value, str):
        raise InvalidEvent("wrong_type", f"{path}: expected an ISO-8601 timestamp or epoch "
                           f"milliseconds, got {_type_name(value)}")
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise InvalidEvent("wrong_value", f"{path}: not an ISO-8601 timestamp") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise InvalidEvent("naive_timestamp", f"{path}: timestamp has no zone or offset")
    try:
        parsed = parsed.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 pushed past the calendar by its offset
        raise InvalidEvent("out_of_range", f"{path}: timestamp outside "
                           f"1970-01-01T00:00:00Z..9999-12-30T23:59:59.999Z") from None
    parsed = parsed.replace(microsecond=parsed.microsecond // 1000 * 1000)
    check_instant(parsed, path)
    return parsed


def _date(value: Any, path: str) -> date:
    if not isinstance(value, str) or not _DATE.match(value):
        raise InvalidEvent("wrong_value", f"{path}: expected a date as YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidEvent("wrong_value", f"{path}: not a calendar date") from None


def convert(schema: dict[str, Any], obj: Any, limits: Limits) -> Conversion:
    """Check `obj` (parsed JSON) against the raw Avro record schema and convert it."""
    converter = _Converter(limits)
    record = converter.record(schema, obj, "")
    return Conversion(record, converter.dropped)
