"""The topic layout as an integrator reads it: each topic, its key, its value schema and
fingerprint, and who may write and read it (`covenant-broker kafka init`, docs/integrators.md).

A pure function of the layout (broker/backends/kafka/topics.py), the covenant, the schemas
and the ACL plan (broker/backends/kafka/acl.py): it talks to no Kafka, so the same rows
print whether the topics were just created or already there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from broker.backends.kafka.acl import READ, TOPIC, WRITE, AclBinding
from broker.backends.kafka.topics import Layout
from broker.model.schemas import Schema, SchemaRegistry
from broker.policy.covenant import Covenant

# What a record's key is on each topic. The ingress key decides the partition (Kafka's
# default murmur2 partitioner): the partition worker that owns an event_id judges its
# duplicates, so the broker forwards a record that arrives elsewhere (a null key) to it.
KEYS = {
    "ingress": "event_id (UTF-8, lowercase); null is allowed (the broker forwards the "
               "record to the event_id's partition, murmur2(event_id) % partitions)",
    "store": "event_id",
    "egress": "the record's per-purpose opaque reference (ref)",
    "quarantine": "none",
    "revisions": "event_id of the event it corrects or withdraws",
    "audit": "none (one hash chain per partition; a record holds the entries of one "
             "transaction, records.audit_entry each)",
    "control": "control event name",
    "expiry": "recipient/purpose/released_offset",
    "keys": "data key id",
}
RECORD_SCHEMAS = {"store": "records.sealed_record", "quarantine": "records.quarantine_entry",
                  "audit": "records.audit_batch", "keys": "records.data_key",
                  # a correction: the sealed corrected event; a withdrawal: empty
                  "revisions": "records.sealed_record"}
OTHER_VALUES = {"control": "JSON control event (broker-internal)",
                "expiry": "tombstone offset as decimal text (broker-internal)"}


@dataclass(frozen=True)
class TopicRow:
    topic: str
    role: str
    partitions: int
    key: str
    value: str  # "Avro single-object <name>" or a plain description
    schema: str | None  # the value's Avro full name
    fingerprint: str | None  # CRC-64-AVRO, hex as it stands after C3 01 (little-endian)
    writers: list[str]
    readers: list[str]

    def as_json(self) -> dict[str, object]:
        return asdict(self)


def stream_views(covenant: Covenant) -> dict[tuple[str, str], str]:
    """(recipient, purpose) -> the Avro full name of the view released on that stream."""
    return {(r, name): p.view for name, p in covenant.purposes.items()
            for r in p.recipient_names()}


def describe_layout(layout: Layout, covenant: Covenant, registry: SchemaRegistry,
                    bindings: list[AclBinding]) -> list[TopicRow]:
    views = stream_views(covenant)
    by_egress = {layout.names.egress(r, p): (r, p) for r, p in layout.streams}
    by_ingress = {layout.names.ingress(t): t for t in layout.event_types}
    rows = []
    for spec in layout.specs():
        name: str | None
        if spec.role == "ingress":
            name = by_ingress[spec.name]
        elif spec.role == "egress":
            name = views.get(by_egress[spec.name])
        else:
            name = RECORD_SCHEMAS.get(spec.role)
        schema: Schema | None = registry.by_name.get(name) if name else None
        if schema is None:
            value = OTHER_VALUES.get(spec.role, "unknown")
        elif spec.role == "ingress":
            value = f"Avro single-object {schema.name}, or a JSON object of that type"
        else:
            value = f"Avro single-object {schema.name}"
        rows.append(TopicRow(
            spec.name, spec.role, spec.partitions, KEYS.get(spec.role, "none"), value,
            schema.name if schema else None, schema.fingerprint.hex() if schema else None,
            _who(bindings, spec.name, WRITE), _who(bindings, spec.name, READ)))
    return rows


def _who(bindings: list[AclBinding], topic: str, operation: str) -> list[str]:
    """Principals with `operation` on the topic, by a literal or a prefixed binding."""
    return sorted({b.principal for b in bindings
                   if b.resource_type == TOPIC and b.operation == operation
                   and (b.resource_name == topic if b.pattern_type == "LITERAL"
                        else topic.startswith(b.resource_name))})


def table_lines(rows: list[TopicRow]) -> list[str]:
    out = []
    for row in rows:
        out.append(f"{row.topic}  [{row.role}, {row.partitions} partition"
                   f"{'s' if row.partitions != 1 else ''}]")
        out.append(f"  key:    {row.key}")
        out.append(f"  value:  {row.value}"
                   + (f" (fingerprint {row.fingerprint})" if row.fingerprint else ""))
        out.append(f"  write:  {', '.join(row.writers) or '-'}")
        out.append(f"  read:   {', '.join(row.readers) or '-'}")
    return out
