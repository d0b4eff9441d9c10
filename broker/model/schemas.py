"""The Avro schemas in schemas/: event types, output views and the broker's own records.

Field annotations beyond Avro's own keys carry the data protection facts the broker needs,
so nothing about a particular municipality lives in code:
  "personal": true    the field holds personal data (never logged; sealed at rest)
  "subject": "bsn"    the field identifies the data subject (pseudonymised in the audit log)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro
from fastavro.read import SchemaResolutionError
from fastavro.schema import to_parsing_canonical_form

from broker.errors import InvalidEvent, SchemaError
from broker.model import codec
from broker.model.avro_writer import FieldWriter, compile_writer
from broker.model.evolution import incompatibilities

KINDS = ("events", "views", "records")


@dataclass(frozen=True)
class FieldInfo:
    """A leaf (or whole-record) field of an event type, addressed by dotted path."""

    path: str
    avro_type: Any  # the raw JSON type (without the null branch)
    nullable: bool  # null itself, or under a nullable parent
    personal: bool
    subject: str | None


@dataclass
class Schema:
    name: str  # Avro full name, for event types also the event type ("politie.woninginbraak")
    kind: str
    raw: dict[str, Any]
    parsed: Any
    fingerprint: bytes
    path: Path
    fields: dict[str, FieldInfo] = field(default_factory=dict)  # every path, records included
    _writer: FieldWriter | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def leaf_paths(self) -> list[str]:
        return [p for p, f in self.fields.items() if not _is_record(f.avro_type)]

    @property
    def personal_paths(self) -> list[str]:
        return [p for p, f in self.fields.items() if f.personal]

    @property
    def subject_paths(self) -> dict[str, str]:
        return {p: f.subject for p, f in self.fields.items() if f.subject}

    def encode(self, record: dict[str, Any]) -> bytes:
        """Single-object encoding: the compiled fast path, else fastavro (same bytes)."""
        write = self._writer
        if write is None:
            # The broker's own records hold nothing personal in clear: their few recurring
            # strings (purposes, recipients, field lists) may stay cached, encoded.
            write = self._writer = compile_writer(self.parsed,
                                                  cache_strings=self.kind == "records")
        out = [codec.MARKER, self.fingerprint]
        try:
            write(record, out)
        except Exception:  # noqa: BLE001 - outside the fast path fastavro decides, errors too
            return codec.encode(self.parsed, self.fingerprint, record)
        return b"".join(out)

    def decode(self, data: bytes) -> dict[str, Any]:
        header = codec.split_header(data)
        if header is None or header[0] != self.fingerprint:
            raise ValueError(f"not a single-object encoded {self.name}")
        return codec.decode_payload(header[1], self.parsed)


def _is_record(avro_type: Any) -> bool:
    return isinstance(avro_type, dict) and avro_type.get("type") == "record"


def _strip_null(avro_type: Any) -> tuple[Any, bool]:
    if isinstance(avro_type, list):
        branches = [b for b in avro_type if b != "null"]
        if len(branches) == 1:
            return branches[0], len(branches) != len(avro_type)
    return avro_type, avro_type == "null"


def _walk(record: dict[str, Any], prefix: str, nullable_parent: bool) -> dict[str, FieldInfo]:
    out: dict[str, FieldInfo] = {}
    for f in record["fields"]:
        path = f"{prefix}{f['name']}"
        inner, nullable = _strip_null(f["type"])
        nullable = nullable or nullable_parent
        out[path] = FieldInfo(path, inner, nullable, bool(f.get("personal")), f.get("subject"))
        if _is_record(inner):
            out.update(_walk(inner, f"{path}.", nullable))
    return out


def build_schema(raw: Any, kind: str, path: Path) -> Schema:
    """A Schema from its JSON form; `path` names where it came from in errors."""
    try:
        parsed = fastavro.parse_schema(raw)
    except (ValueError, fastavro.schema.SchemaParseException) as exc:
        raise SchemaError(f"{path}: invalid Avro schema: {exc}") from exc
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        raise SchemaError(f"{path}: a schema file must hold one Avro record")
    fp = codec.fingerprint(to_parsing_canonical_form(raw))
    schema = Schema(str(parsed["name"]), kind, raw, parsed, fp, path)
    schema.fields = _walk(raw, "", False)
    return schema


class SchemaRegistry:
    """Every schema under one directory, looked up by name or by fingerprint."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.by_name: dict[str, Schema] = {}
        self.by_fingerprint: dict[bytes, Schema] = {}
        self.history: dict[bytes, Schema] = {}  # older writer versions, resolved to current
        self.incompatible: dict[bytes, list[str]] = {}  # history fingerprint -> why not
        if not root.is_dir():
            raise SchemaError(f"{root}: schema directory not found")
        for kind in KINDS:
            for path in sorted((root / kind).glob("*.avsc")):
                self._add(self._load(path, kind))
            for path in sorted((root / kind / "history").glob("*.avsc")):
                old = self._load(path, kind)
                current = self.by_name.get(old.name)
                if current is None:
                    raise SchemaError(f"{path}: older version of {old.name}, which has no "
                                      f"current schema in {root / kind}")
                self.history[old.fingerprint] = old
                problems = incompatibilities(old.raw, current.raw)
                if problems:
                    self.incompatible[old.fingerprint] = problems

    @staticmethod
    def _load(path: Path, kind: str) -> Schema:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SchemaError(f"{path}: invalid Avro schema: {exc}") from exc
        return build_schema(raw, kind, path)

    def _add(self, schema: Schema) -> None:
        if schema.name in self.by_name:
            raise SchemaError(f"{schema.path}: schema {schema.name} is defined twice")
        self.by_name[schema.name] = schema
        self.by_fingerprint[schema.fingerprint] = schema

    def get(self, name: str) -> Schema:
        try:
            return self.by_name[name]
        except KeyError:
            raise SchemaError(f"no schema named {name} under {self.root}") from None

    def event_types(self) -> list[str]:
        return [s.name for s in self.by_name.values() if s.kind == "events"]

    def fingerprints_of(self, name: str) -> list[tuple[str, Schema]]:
        """The writer schemas of `name` a message may name: ("current", schema) first, then
        each older version ("history"), as hex fingerprints sort them."""
        current = self.by_name.get(name)
        out = [("current", current)] if current is not None else []
        out += sorted((("history", s) for s in self.history.values() if s.name == name),
                      key=lambda item: item[1].fingerprint.hex())
        return out

    def _unknown_fingerprint(self, fp: bytes, expected: str | None) -> InvalidEvent:
        reason = f"unknown schema fingerprint {fp.hex()}"
        if expected is not None and expected in self.by_name:
            known = ", ".join(f"{s.fingerprint.hex()} ({label}"
                              + (")" if label == "current" else f": {s.path.name})")
                              for label, s in self.fingerprints_of(expected))
            reason += (f"; the known fingerprints of {expected} are {known}"
                       f" (`covenant-broker schemas list`). The fingerprint is CRC-64-AVRO "
                       "of the writer schema's Parsing Canonical Form, little-endian after "
                       "C3 01; some libraries (the Apache `avro` Python package) keep "
                       "logicalType in the canonical form of schemas with logical types and "
                       "so compute a different one: take the fingerprint from `schemas "
                       "list`, or compute it with fastavro or Java Avro")
        return InvalidEvent("unknown_schema", reason)

    def decode_single_object(self, data: bytes, kinds: tuple[str, ...] = ("events",),
                             expected: str | None = None) -> tuple[Schema, dict[str, Any]]:
        """Decode a message of one of `kinds` (events by default); older compatible writer
        schemas resolve to the current one. With `expected` (the declared type), an unknown
        fingerprint's reason lists the fingerprints that type's messages may carry."""
        header = codec.split_header(data)
        if header is None:
            raise InvalidEvent("bad_framing", "not Avro single-object encoded (marker C3 01)")
        fp, payload = header
        current = self.by_fingerprint.get(fp)
        writer = current
        if writer is None and fp in self.history:
            writer = self.history[fp]
            current = self.by_name.get(writer.name)
        if writer is None or current is None or current.kind not in kinds:
            raise self._unknown_fingerprint(fp, expected)
        if fp in self.incompatible:
            raise InvalidEvent("incompatible_schema", f"writer schema {writer.path.name} "
                               f"({fp.hex()}) does not resolve to the current {current.name}: "
                               f"{'; '.join(self.incompatible[fp])}")
        try:
            record = codec.decode_payload(payload, writer.parsed, current.parsed)
        except SchemaResolutionError:
            # data-dependent (an enum symbol or union branch the current schema lacks); the
            # decoder's message may quote the value, so it is not passed on
            raise InvalidEvent("incompatible_schema", f"a value written with "
                               f"{writer.path.name} ({fp.hex()}) has no counterpart in the "
                               f"current {current.name} (Avro schema resolution)") from None
        except Exception as exc:  # noqa: BLE001 - any decoder failure is bad input, quarantined
            raise InvalidEvent(
                "undecodable", f"payload does not decode as {current.name}: {type(exc).__name__}"
            ) from None
        return current, record
