"""The audit log as Logboek Dataverwerkingen (LDV) records: OpenTelemetry spans in OTLP JSON.

Each output line is one `ExportTraceServiceRequest` in the OTLP/JSON encoding (what the
OpenTelemetry Collector's file exporter writes and its `otlpjsonfile` receiver reads):
lowerCamelCase keys, enums as integers, 64-bit integers as decimal strings, and trace and
span ids as hex, as OTLP/JSON requires (not base64 as the plain protobuf JSON mapping
would have them). docs/ldv.md has the table of every LDV field and where it comes from.

One span per audit entry: its own trace_id, span_id, parent_span_id, name, start and end
time and status. Below it, one child span per data subject the entry names, carrying
`dpl.core.data_subject_id` (the keyed pseudonym, never the BSN) and
`dpl.core.data_subject_id_type`: LDV wants one record per data subject per action. Every
span carries the entry's `seq` and RFC 9162 leaf hash, so an auditor can ask
`covenant-broker audit prove --entry SEQ` for any span and check that the proven bytes
hash to that leaf: the export is a view of the verifiable log, not a second log to trust.
Child span ids are derived from the leaf hash, so exporting twice gives the same spans.

Fields are read defensively (`entry.get`): an entry from an older or newer schema, or one
that holds a raw `traceparent` where a trace id is expected, still exports.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from broker.audit.entries import PROCESSING_ACTIVITY, chain_hash
from broker.audit.store import AuditStore
from broker.clock import to_millis
from broker.model.schemas import Schema

SERVICE_NAME = "covenant-broker"
SCOPE_NAME = "covenant-broker/audit"
SCOPE_VERSION = "1"  # of this mapping; docs/ldv.md
# Attribute keys. dpl.core.* are LDV's own; the rest is ours, outside the dpl namespace
# (LDV lets only established extensions use dpl.*).
ACTIVITY = "dpl.core.processing_activity_id"
SUBJECT_ID = "dpl.core.data_subject_id"
SUBJECT_TYPE = "dpl.core.data_subject_id_type"
FOREIGN_SPAN = "dpl.core.foreign_operation.span_id"
FOREIGN_PROCESSOR = "dpl.core.foreign_operation.processor"
SEQ = "covenant_broker.audit.seq"
LEAF = "covenant_broker.audit.leaf_hash"
ORIGIN = "covenant_broker.audit.origin"
_OURS = "covenant_broker."
SPAN_KIND_INTERNAL = 1
STATUS = {"UNSET": 0, "OK": 1, "ERROR": 2}
# Entry fields copied as attributes of the entry's span (none holds a personal value).
_COPIED = ("covenant_id", "covenant_version", "purpose", "legal_basis", "recipient",
           "decision", "reason_code", "reason", "fields_released", "fields_withheld",
           "policy_hash", "source", "event_type", "event_id", "event_offset", "egress_offset",
           "delivered_commitment")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
_SPAN_ID = re.compile(r"^[0-9a-f]{16}$")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")
# Where a foreign party's URI may be (another change adds it; read whichever is there).
_FOREIGN_ENTITY_KEYS = ("foreign_entity", "foreign_processor")

ActivityLookup = Callable[[str | None, int | None, str | None], str | None]


@dataclass(frozen=True)
class Resource:
    """The OTLP resource: which system wrote the log (LDV `resource`)."""

    service_version: str
    origin: str  # the log origin its checkpoints are signed under

    def otlp(self) -> dict[str, Any]:
        return {"attributes": [_kv("service.name", SERVICE_NAME),
                               _kv("service.version", self.service_version),
                               _kv(ORIGIN, self.origin)]}


def _value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, list | tuple):
        return {"arrayValue": {"values": [_value(v) for v in value]}}
    return {"stringValue": str(value)}


def _kv(key: str, value: Any) -> dict[str, Any]:
    return {"key": key, "value": _value(value)}


def _nanos(value: Any) -> str:
    ms = to_millis(value) if isinstance(value, datetime) else int(value)
    return str(ms * 1_000_000)


def _hex(value: Any, pattern: re.Pattern[str]) -> str | None:
    """A W3C id in lower-case hex, or None when absent, malformed or all zeros (invalid)."""
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    return text if pattern.match(text) and text.strip("0") else None


def foreign_operation(entry: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(trace id, span id) of the calling party's operation, from whatever the entry holds:
    parsed fields, or a raw `traceparent` kept in foreign_trace_id."""
    raw = entry.get("foreign_trace_id")
    span = _hex(entry.get("foreign_span_id"), _SPAN_ID)
    if isinstance(raw, str) and (m := _TRACEPARENT.match(raw.strip().lower())):
        return _hex(m[1], _TRACE_ID), span or _hex(m[2], _SPAN_ID)
    return _hex(raw, _TRACE_ID), span


def _foreign_entity(entry: Mapping[str, Any], detail: Mapping[str, Any]) -> str | None:
    for key in _FOREIGN_ENTITY_KEYS:
        value = entry.get(key) or detail.get(key)
        if isinstance(value, str) and _URI.match(value):
            return value
    return None


def _child_span_id(leaf_hex: str, index: int) -> str:
    digest = hashlib.sha256(bytes.fromhex(leaf_hex) + b"subject" + index.to_bytes(4, "big"))
    return digest.hexdigest()[:16]


def processing_activity(entry: Mapping[str, Any],
                        activity_of: ActivityLookup | None = None) -> str | None:
    """An entry's processing activity URI: its own (`detail.processing_activity_id`), else,
    for an entry that does not carry it (written before decisions did, an ack), the one its
    purpose has in the covenant version the entry names."""
    detail: Mapping[str, Any] = entry.get("detail") or {}
    activity = entry.get(PROCESSING_ACTIVITY) or detail.get(PROCESSING_ACTIVITY)
    if not activity and activity_of is not None and entry.get("purpose"):
        activity = activity_of(entry.get("covenant_id"), entry.get("covenant_version"),
                               entry.get("purpose"))
    return str(activity) if activity else None


def entry_spans(seq: int, leaf_hex: str, entry: Mapping[str, Any],
                activity_of: ActivityLookup | None = None) -> list[dict[str, Any]]:
    """The spans of one audit entry: its own, then one per data subject."""
    detail: Mapping[str, Any] = entry.get("detail") or {}
    activity = processing_activity(entry, activity_of)
    proof = [_kv(SEQ, seq), _kv(LEAF, leaf_hex)]
    attributes = [_kv(ACTIVITY, activity)] if activity else []
    foreign_trace, foreign_span = foreign_operation(entry)
    if foreign_span:
        attributes.append(_kv(FOREIGN_SPAN, foreign_span))
    entity = _foreign_entity(entry, detail)
    if entity:
        attributes.append(_kv(FOREIGN_PROCESSOR, entity))
    if foreign_trace and not foreign_span:
        attributes.append(_kv(f"{_OURS}foreign_trace_id", foreign_trace))
    attributes += proof
    attributes += [_kv(f"{_OURS}{name}", entry[name]) for name in _COPIED
                   if entry.get(name) not in (None, "", [])]
    attributes += [_kv(f"{_OURS}detail.{k}", v) for k, v in sorted(detail.items())
                   if k != PROCESSING_ACTIVITY]
    status = entry.get("status") or "UNSET"
    trace_id = entry["trace_id"]
    times = {"startTimeUnixNano": _nanos(entry["start_time"]),
             "endTimeUnixNano": _nanos(entry["end_time"])}
    span: dict[str, Any] = {"traceId": trace_id, "spanId": entry["span_id"],
                            "name": entry["name"], "kind": SPAN_KIND_INTERNAL, **times,
                            "attributes": attributes,
                            "status": {"code": STATUS.get(status, 0)}}
    parent = _hex(entry.get("parent_span_id"), _SPAN_ID)
    if parent:
        span["parentSpanId"] = parent
    if status == "ERROR" and entry.get("reason_code"):
        span["status"]["message"] = entry["reason_code"]
    if foreign_trace and foreign_span:
        span["links"] = [{"traceId": foreign_trace, "spanId": foreign_span,
                          "attributes": [_kv(f"{_OURS}link", "foreign_operation")]}]
    spans = [span]
    for index, subject in enumerate(entry.get("data_subjects") or []):
        child = [_kv(SUBJECT_ID, subject["pseudonym"]),
                 _kv(SUBJECT_TYPE, subject.get("id_type") or "unknown")]
        if activity:
            child.append(_kv(ACTIVITY, activity))
        child += proof
        if subject.get("role"):
            child.append(_kv(f"{_OURS}subject_role", subject["role"]))
        spans.append({"traceId": trace_id, "spanId": _child_span_id(leaf_hex, index),
                      "parentSpanId": entry["span_id"], "name": entry["name"],
                      "kind": SPAN_KIND_INTERNAL, **times, "attributes": child,
                      "status": {"code": STATUS.get(status, 0)}})
    return spans


def request(resource: Resource, spans: list[dict[str, Any]]) -> dict[str, Any]:
    """One ExportTraceServiceRequest (OTLP/JSON) holding `spans`."""
    return {"resourceSpans": [{
        "resource": resource.otlp(),
        "scopeSpans": [{"scope": {"name": SCOPE_NAME, "version": SCOPE_VERSION},
                        "spans": spans}]}]}


@dataclass
class ExportPosition:
    next_seq: int  # the first seq not yet read
    entries: int = 0  # entries exported so far


def export_batches(store: AuditStore, schema: Schema, resource: Resource,
                   position: ExportPosition, *, since_ms: int | None = None,
                   batch: int = 500, limit: int | None = None,
                   activity_of: ActivityLookup | None = None) -> Iterator[dict[str, Any]]:
    """Requests of at most `batch` entries from `position.next_seq` to the current end of
    the log (advancing `position`); entries that started before `since_ms` are skipped;
    at most `limit` entries in all (counted in `position.entries`)."""
    spans: list[dict[str, Any]] = []
    count = 0
    for seq, data in store.audit_entries(position.next_seq):
        if limit is not None and position.entries >= limit:
            break
        position.next_seq = seq + 1
        entry = schema.decode(data)
        if since_ms is not None and to_millis(entry["start_time"]) < since_ms:
            continue
        spans += entry_spans(seq, chain_hash(data), entry, activity_of)
        position.entries += 1
        count += 1
        if count == batch:
            yield request(resource, spans)
            spans, count = [], 0
    if spans:
        yield request(resource, spans)


def follow(store: AuditStore, schema: Schema, resource: Resource, position: ExportPosition,
           write: Callable[[dict[str, Any]], None], *, since_ms: int | None = None,
           batch: int = 500, limit: int | None = None, interval: float = 1.0,
           stop: Callable[[], bool] = lambda: False,
           activity_of: ActivityLookup | None = None,
           sleep: Callable[[float], None] = time.sleep) -> None:
    """Write what the log holds, then new entries as they are appended, until `stop()` or
    `limit` entries; each pass reads from the last seq written, so nothing is sent twice."""
    while True:
        for item in export_batches(store, schema, resource, position, since_ms=since_ms,
                                   batch=batch, limit=limit, activity_of=activity_of):
            write(item)
        if (limit is not None and position.entries >= limit) or stop():
            return
        sleep(interval)
