"""Ingest: raw input (JSON or Avro single-object bytes) to a stored event, or to quarantine.

Validation order: size, framing and decoding (Confluent-framed input, magic byte 0x00 and a
schema id, is refused as confluent_framing, naming what to send instead), schema, the
source's right to publish the type, duplicates. Every failure becomes an InvalidEvent with
a reason code; the caller quarantines it with an audit record. Nothing here raises past one event.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from broker.errors import InvalidEvent
from broker.model.codec import MARKER, confluent_schema_id
from broker.model.json_input import (
    Limits,
    check_instant,
    check_not_future,
    convert,
    loads_unique,
    past_instant_paths,
)
from broker.model.schemas import Schema, SchemaRegistry

PREFIX_BYTES = 1024  # what an oversized input keeps: enough to tell what it was
LINE_MARGIN = 4096  # a line's surrounding whitespace the bounded reader still holds
CHUNK_BYTES = 64 * 1024
CONFLUENT_REASON = (
    "Confluent Schema Registry wire format (magic byte 0x00, schema id {schema_id}): this "
    "broker has no schema registry; send Avro single-object encoding (C3 01, the writer "
    "schema's 8-byte CRC-64-AVRO fingerprint little-endian, then the Avro body; "
    "`covenant-broker schemas list` gives the fingerprints) or one JSON object per record")


@dataclass(frozen=True)
class Oversized:
    """An input longer than the limit, as the bounded reader leaves it: never held whole."""

    length: int
    sha256: str  # hex, of the whole input
    prefix: bytes  # its first PREFIX_BYTES bytes at most

    @staticmethod
    def of(raw: bytes) -> Oversized:
        return Oversized(len(raw), hashlib.sha256(raw).hexdigest(), raw[:PREFIX_BYTES])

    def bounded_form(self) -> bytes:
        """What the quarantine stores in place of the input."""
        return (f"oversized input: {self.length} bytes, sha256 {self.sha256}; the first "
                f"{len(self.prefix)} bytes follow\n").encode() + self.prefix


@dataclass(frozen=True)
class Accepted:
    schema: Schema
    record: dict[str, Any]
    payload: bytes  # Avro single-object encoding under the current schema
    event_id: str
    dropped_fields: list[str] = field(default_factory=list)


def source_of(event_type: str) -> str:
    """An event type belongs to the source in its name: politie.woninginbraak -> politie."""
    return event_type.split(".", 1)[0]


def _reject_constant(name: str) -> float:
    raise InvalidEvent("invalid_json", f"{name} is not a JSON number")


def _parse_json(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent("invalid_unicode", f"not valid UTF-8 at byte {exc.start}") from None
    try:
        return loads_unique(text, parse_constant=_reject_constant)
    except RecursionError:
        raise InvalidEvent("too_deeply_nested", "JSON nesting is too deep") from None
    except json.JSONDecodeError as exc:
        raise InvalidEvent("invalid_json", f"{exc.msg} at line {exc.lineno} column "
                           f"{exc.colno}") from None
    except ValueError:  # int() refuses numbers over sys.get_int_max_str_digits() digits
        raise InvalidEvent("invalid_json", "a number has too many digits to be read") from None


def _within_limits(value: Any, limit: int) -> bool:
    """True when `_check_strings` passes, without making a path per value (the common
    case); False sends the caller to `_check_strings` for the error it words."""
    if isinstance(value, str):
        # a code point is at most 4 bytes in UTF-8 (surrogates 3): most strings need no encode
        return len(value) * 4 <= limit or len(value.encode("utf-8", "surrogatepass")) <= limit
    if isinstance(value, datetime):
        try:
            check_instant(value, "")
        except InvalidEvent:
            return False
        return True
    if isinstance(value, dict | list):
        for v in value.values() if isinstance(value, dict) else value:
            if v is not None and not _within_limits(v, limit):
                return False
    return True


def _check_strings(value: Any, path: str, limit: int) -> None:
    """The checks JSON conversion makes that Avro decoding does not: string sizes, instants."""
    if isinstance(value, str):
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > limit:  # worded as the JSON path words it
            raise InvalidEvent("field_too_large", f"{path}: {size} bytes, the limit is {limit}")
    elif isinstance(value, datetime):
        check_instant(value, path)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_strings(v, f"{path}.{k}" if path else k, limit)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_strings(v, f"{path}[{i}]", limit)


def validate(raw: bytes, source: str, declared_type: str, registry: SchemaRegistry,
             limits: Limits, *, now_ms: int | None = None) -> Accepted:
    """Check one raw input against everything but duplicates; raise InvalidEvent if bad.

    With `now_ms` (the ingest time), an instant marked x-past in the schema that lies more
    than limits.max_clock_skew_ms after it is refused as from_the_future.
    """
    if len(raw) > limits.max_event_bytes:
        raise InvalidEvent("event_too_large", f"{len(raw)} bytes, the limit is "
                           f"{limits.max_event_bytes}")
    dropped: list[str] = []
    schema_id = confluent_schema_id(raw)
    if schema_id is not None:  # read as JSON it fails as invalid_unicode, which misleads
        raise InvalidEvent("confluent_framing", CONFLUENT_REASON.format(schema_id=schema_id))
    if raw[:2] == MARKER:
        schema, record = registry.decode_single_object(raw, expected=declared_type)
        if not _within_limits(record, limits.max_string_bytes):
            _check_strings(record, "", limits.max_string_bytes)
        if schema.name != declared_type:
            raise InvalidEvent("type_mismatch", f"message is a {schema.name}, the input was "
                               f"declared as {declared_type}")
    else:
        schema = registry.get(declared_type)
        conversion = convert(schema.raw, _parse_json(raw), limits)
        record, dropped = conversion.record, conversion.dropped_fields
    owner = source_of(schema.name)
    if owner != source:
        raise InvalidEvent("source_not_owner", f"source {source} may not publish "
                           f"{schema.name}; only {owner} may")
    if now_ms is not None:
        check_not_future(record, past_instant_paths(schema.raw), now_ms,
                         limits.max_clock_skew_ms)
    try:
        payload = schema.encode(record)
    except Exception as exc:  # noqa: BLE001 - the encoder's errors are bad input here
        raise InvalidEvent("unencodable", f"does not encode as {schema.name}: "
                           f"{type(exc).__name__}") from None
    return Accepted(schema, record, payload, str(record["event_id"]).lower(), dropped)


def split_lines(data: bytes) -> Iterable[tuple[int, bytes]]:
    """Numbered non-blank lines of a JSON-lines input (1-based line numbers)."""
    for number, line in enumerate(data.split(b"\n"), start=1):
        stripped = line.strip()
        if stripped:
            yield number, stripped


class Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


class _Overflow:
    """The rest of a line past the reader's bound: counted and hashed, not kept."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.length = 0
        self.prefix = b""

    def add(self, piece: bytes) -> None:
        if not self.length:  # leading whitespace is not part of the input, as in split_lines
            piece = piece.lstrip()
        self.hash.update(piece)
        self.length += len(piece)
        if len(self.prefix) < PREFIX_BYTES:
            self.prefix += piece[:PREFIX_BYTES - len(self.prefix)]

    def done(self) -> Oversized | None:
        return Oversized(self.length, self.hash.hexdigest(), self.prefix) \
            if self.length else None


def read_lines(stream: Readable, max_line_bytes: int, chunk_bytes: int = CHUNK_BYTES
               ) -> Iterator[tuple[int, bytes | Oversized]]:
    """`split_lines` over a stream, holding at most max_line_bytes + LINE_MARGIN of a line
    (plus one read chunk): a longer line comes out as an `Oversized` (its length and
    SHA-256 from its first non-blank byte to its end, trailing blanks included, and its
    first PREFIX_BYTES), so one huge line cannot take the memory a whole-file read would
    (issue 15, item 7)."""
    bound = max_line_bytes + LINE_MARGIN
    buffer = bytearray()
    overflow: _Overflow | None = None
    number = 0

    def line() -> bytes | Oversized | None:
        nonlocal overflow
        if overflow is not None:
            out: bytes | Oversized | None = overflow.done()
            overflow = None
        else:
            out = bytes(buffer).strip()
        buffer.clear()
        return out

    while chunk := stream.read(chunk_bytes):
        start = 0
        while start <= len(chunk):
            newline = chunk.find(b"\n", start)
            piece = chunk[start:len(chunk) if newline < 0 else newline]
            if overflow is not None:
                overflow.add(piece)
            elif len(buffer) + len(piece) <= bound:
                buffer += piece
            else:  # past the bound: keep no more of this line
                overflow = _Overflow()
                overflow.add(bytes(buffer))
                overflow.add(piece)
                buffer.clear()
            if newline < 0:
                break
            number += 1
            out = line()
            if out:
                yield number, out
            start = newline + 1
    if buffer or overflow is not None:
        out = line()
        if out:
            yield number + 1, out
