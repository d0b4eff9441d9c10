"""The schema catalogue: every writer schema a producer or consumer meets, with its
CRC-64-AVRO fingerprint and where it is used (`covenant-broker schemas list|show`,
GET /v1/schemas/{fingerprint}, docs/integrators.md).

The fingerprint is the one the broker puts after C3 01 in the single-object encoding
(broker/model/codec.py): CRC-64-AVRO of the schema's Parsing Canonical Form, as fastavro and
Java Avro compute it, shown as the hex of those 8 little-endian bytes. Schemas are not
personal data: the catalogue holds names, types and annotations only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from fastavro.schema import to_parsing_canonical_form

from broker.errors import InputError
from broker.model.schemas import Schema, SchemaRegistry
from broker.policy.covenant import Covenant

# what each broker record schema is the value of (broker-internal topics and tables)
RECORD_USES = {
    "records.sealed_record": "record: the sealed store (only the broker reads it)",
    "records.quarantine_entry": "record: quarantine",
    "records.audit_entry": "record: the audit log",
    "records.audit_batch": "record: the audit topic (the entries of one transaction)",
    "records.data_key": "record: the data key topic",
    "records.tombstone": "record: tombstone",
}


@dataclass(frozen=True)
class SchemaEntry:
    name: str
    kind: str  # events | views | records
    version: str  # "current", or the history file name of an older writer version
    fingerprint: str  # hex of the 8 bytes after C3 01
    used: list[str]
    schema: Schema

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "kind": self.kind, "version": self.version,
                "fingerprint": self.fingerprint, "used": self.used}

    def writer_schema(self) -> str:
        """The full writer schema JSON (annotations included: a consumer's Avro library
        ignores what it does not know, and they say which fields are personal)."""
        return json.dumps(self.schema.raw, indent=2, ensure_ascii=False)

    def canonical_form(self) -> str:
        return str(to_parsing_canonical_form(self.schema.raw))


def _uses(schema: Schema, covenant: Covenant | None) -> list[str]:
    if schema.kind == "events":
        uses = [f"ingress type {schema.name} (source {schema.name.partition('.')[0]})"]
        if covenant is not None:
            uses += [f"source of purpose {name}" for name, p in
                     sorted(covenant.purposes.items()) if p.event_type == schema.name]
        return uses
    if schema.kind == "views":
        if covenant is None:
            return ["view"]
        return [f"view of {r} for {name}" for name, p in sorted(covenant.purposes.items())
                if p.view == schema.name for r in p.recipient_names()] or ["view (unused)"]
    return [RECORD_USES.get(schema.name, "record")]


def catalog(registry: SchemaRegistry, covenant: Covenant | None) -> list[SchemaEntry]:
    """Every schema: by kind (events, views, records) and name, current before history."""
    order = {"events": 0, "views": 1, "records": 2}
    out = []
    for schema in sorted(registry.by_name.values(), key=lambda s: (order[s.kind], s.name)):
        uses = _uses(schema, covenant)
        for label, version in registry.fingerprints_of(schema.name):
            out.append(SchemaEntry(version.name, version.kind,
                                   "current" if label == "current" else version.path.name,
                                   version.fingerprint.hex(),
                                   uses if label == "current"
                                   else [f"older writer version of {schema.name}, still "
                                         "accepted (resolved to the current schema)"],
                                   version))
    return out


def find(entries: list[SchemaEntry], wanted: str) -> SchemaEntry:
    """The entry of a fingerprint (hex, any case, with or without 0x) or of a name (the
    current version)."""
    key = wanted.strip().lower().removeprefix("0x")
    for entry in entries:
        if entry.fingerprint == key:
            return entry
    for entry in entries:
        if entry.name == wanted.strip() and entry.version == "current":
            return entry
    raise InputError(f"no schema with the fingerprint or name {wanted!r}; "
                     "`covenant-broker schemas list` shows them")
