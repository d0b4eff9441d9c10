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
from fastavro.schema import to_parsing_canonical_form

from broker.errors import InvalidEvent, SchemaError
from broker.model import codec

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
        return codec.encode(self.parsed, self.fingerprint, record)

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


class SchemaRegistry:
    """Every schema under one directory, looked up by name or by fingerprint."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.by_name: dict[str, Schema] = {}
        self.by_fingerprint: dict[bytes, Schema] = {}
        self.history: dict[bytes, Schema] = {}  # older writer versions, resolved to current
        if not root.is_dir():
            raise SchemaError(f"{root}: schema directory not found")
        for kind in KINDS:
            for path in sorted((root / kind).glob("*.avsc")):
                self._add(self._load(path, kind))
            for path in sorted((root / kind / "history").glob("*.avsc")):
                old = self._load(path, kind)
                self.history[old.fingerprint] = old

    @staticmethod
    def _load(path: Path, kind: str) -> Schema:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            parsed = fastavro.parse_schema(raw)
        except (OSError, ValueError, fastavro.schema.SchemaParseException) as exc:
            raise SchemaError(f"{path}: invalid Avro schema: {exc}") from exc
        if not isinstance(parsed, dict) or parsed.get("type") != "record":
            raise SchemaError(f"{path}: a schema file must hold one Avro record")
        name = str(parsed["name"])
        fp = codec.fingerprint(to_parsing_canonical_form(raw))
        schema = Schema(name, kind, raw, parsed, fp, path)
        schema.fields = _walk(raw, "", False)
        return schema

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

    def decode_single_object(self, data: bytes) -> tuple[Schema, dict[str, Any]]:
        """Decode any known event message; older compatible writer schemas resolve to current."""
        header = codec.split_header(data)
        if header is None:
            raise InvalidEvent("bad_framing", "not Avro single-object encoded (marker C3 01)")
        fp, payload = header
        current = self.by_fingerprint.get(fp)
        writer = current
        if writer is None and fp in self.history:
            writer = self.history[fp]
            current = self.by_name.get(writer.name)
        if writer is None or current is None or current.kind != "events":
            raise InvalidEvent("unknown_schema", f"unknown schema fingerprint {fp.hex()}")
        try:
            record = codec.decode_payload(payload, writer.parsed, current.parsed)
        except Exception as exc:  # noqa: BLE001 - any decoder failure is bad input, quarantined
            raise InvalidEvent(
                "undecodable", f"payload does not decode as {current.name}: {type(exc).__name__}"
            ) from None
        return current, record
