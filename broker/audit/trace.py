"""W3C Trace Context (`traceparent`) in and out: the one place a header is judged.

Under Logboek Dataverwerkingen (the 2025 decision on trace context) the called organisation
goes on in the caller's trace: an event or request that arrives with a valid `traceparent`
keeps its `trace_id`, and the caller's span (the header's parent-id) is recorded as the
foreign operation (`foreign_trace_id`, `foreign_span_id`, and the calling party as a URI
in `detail["foreign_entity"]`) and as the W3C parent of the broker's own span
(`parent_span_id`). Without one, or with one that is not valid, the broker starts a trace
of its own: a bad header is never a reason to refuse or quarantine what it came with (the
callers count it).

What the broker sends on (egress records, HTTP answers) is a version-00 header naming its
own span, with the sampled flag set: every span the broker makes is recorded in the audit
log, so a recipient can always follow the link back.

Parsing follows the W3C Trace Context recommendation (level 2, section 3.2 and 4.3):
version 00 is exactly `00-<32 hex>-<16 hex>-<2 hex>`, lower-case; version ff is invalid; a
higher version is read by its first four fields as long as the header is at least that long
and the next character, if any, is a dash; an all-zero trace id or parent id is invalid.
Optional whitespace around the value is trimmed (HTTP strips it too).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from broker.audit.entries import new_span_id, new_trace_id

__all__ = ["BadTraceparent", "Inbound", "TraceParent", "foreign_detail", "foreign_fields",
           "inbound", "lenient", "outbound", "parse", "party_uri", "recipient_uri"]

HEADER = "traceparent"
MAX_HEADER_CHARS = 512  # a longer value is refused before any regex runs on it
_V00 = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_FUTURE = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?",
                     re.DOTALL)
SAMPLED = "01"
FOREIGN_ENTITY = "foreign_entity"  # the detail key of the calling party's URI


class BadTraceparent(ValueError):  # noqa: N818 - reads as what it is: a bad header
    """A `traceparent` value that is not valid W3C trace context (the reason says why,
    without quoting the value)."""


@dataclass(frozen=True)
class TraceParent:
    """A valid traceparent: the caller's trace and the caller's span (its parent-id)."""

    trace_id: str  # 32 lower-case hex, not all zero
    parent_id: str  # 16 lower-case hex, not all zero: the caller's span
    flags: str  # 2 lower-case hex
    version: str = "00"

    def header(self) -> str:
        """The version-00 form (a later version is passed on as 00: W3C 3.2.4)."""
        return f"00-{self.trace_id}-{self.parent_id}-{self.flags}"


def parse(value: str | bytes | None) -> TraceParent | None:
    """None for no header; the header parsed; BadTraceparent for an invalid one."""
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            raise BadTraceparent("the traceparent is not ASCII") from None
    if len(value) > MAX_HEADER_CHARS:
        raise BadTraceparent(f"the traceparent is longer than {MAX_HEADER_CHARS} characters")
    value = value.strip(" \t")
    if value[:2] == "00":
        found = _V00.fullmatch(value)
        if found is None:
            raise BadTraceparent("a version-00 traceparent is 00-<32 hex>-<16 hex>-<2 hex>, "
                                 "lower case, 55 characters")
        version, (trace_id, parent_id, flags) = "00", found.groups()
    else:
        future = _FUTURE.fullmatch(value)
        if future is None:
            raise BadTraceparent("a traceparent starts <2 hex version>-<32 hex trace id>-"
                                 "<16 hex parent id>-<2 hex flags>")
        version, trace_id, parent_id, flags, _ = future.groups()
        if version == "ff":
            raise BadTraceparent("traceparent version ff is invalid")
    if trace_id == "0" * 32:
        raise BadTraceparent("the traceparent's trace id is all zeros")
    if parent_id == "0" * 16:
        raise BadTraceparent("the traceparent's parent id is all zeros")
    return TraceParent(trace_id, parent_id, flags, version)


def outbound(trace_id: str, span_id: str) -> str:
    """The traceparent the broker sends for one of its own spans (always sampled: the audit
    log records every span)."""
    return f"00-{trace_id}-{span_id}-{SAMPLED}"


def stream_trace_id(key: bytes, trace_id: str, recipient: str, purpose: str) -> str:
    """The trace id a release goes out under: keyed per (recipient, purpose), so that one
    event released on several streams shows no shared trace id that would link them
    (issue 12: nothing on an egress topic links records across purposes). The decision's
    audit entry keeps it (detail `outbound_trace_id`), so the FG can still follow a
    recipient's processing back to the source's trace."""
    mac = hmac.new(key, b"egress-trace\x00" + "\x00".join((trace_id, recipient, purpose))
                   .encode("utf-8"), hashlib.sha256)
    return mac.hexdigest()[:32]


def stream_tracer(key: bytes) -> Callable[[str, str, str], str]:
    """`stream_trace_id` under one key, its keyed HMAC (and the prefix) set up once: each
    call copies it (the decider makes one per release)."""
    base = hmac.new(key, b"egress-trace\x00", hashlib.sha256)

    def stream_trace_id(trace_id: str, recipient: str, purpose: str) -> str:
        mac = base.copy()
        mac.update("\x00".join((trace_id, recipient, purpose)).encode("utf-8"))
        return mac.hexdigest()[:32]

    return stream_trace_id


def party_uri(source: str) -> str:
    """The URI a covenant party (a source) is named by as the foreign entity."""
    return f"urn:covenant-broker:party:{source}"


def recipient_uri(recipient: str) -> str:
    """The URI a recipient system is named by as the foreign entity of its requests."""
    return f"urn:covenant-broker:recipient:{recipient}"


@dataclass(frozen=True)
class Inbound:
    """The broker's span for one input or request: in the caller's trace when it sent a
    valid header, in a trace of its own otherwise."""

    trace_id: str
    span_id: str
    caller: TraceParent | None  # the valid traceparent it came with, if any
    bad: bool = False  # a header came but was not valid (ignored, counted by the caller)

    @property
    def traceparent(self) -> str:
        """What the broker answers with: its own span."""
        return outbound(self.trace_id, self.span_id)

    def audit_fields(self) -> dict[str, Any]:
        """The audit draft fields of this span: trace, own span, W3C parent and the foreign
        operation (None without a caller); the foreign entity goes in `detail`
        (`foreign_detail`)."""
        return {"trace_id": self.trace_id, "span_id": self.span_id,
                **foreign_fields(self.caller)}


def foreign_fields(caller: TraceParent | None) -> dict[str, Any]:
    """The foreign operation (and W3C parent) a caller's traceparent makes in an entry."""
    if caller is None:
        return {"parent_span_id": None, "foreign_trace_id": None, "foreign_span_id": None}
    return {"parent_span_id": caller.parent_id, "foreign_trace_id": caller.trace_id,
            "foreign_span_id": caller.parent_id}


def foreign_detail(caller: TraceParent | None, entity: str) -> dict[str, str]:
    """The foreign operation's entity, a `detail` entry: audit_entry has no field for it,
    and a new field would change the schema fingerprint every verifier checks entries
    against."""
    return {FOREIGN_ENTITY: entity} if caller is not None else {}


def inbound(value: str | bytes | None) -> Inbound:
    """The span for an input or request that came with this header (or none)."""
    try:
        caller = parse(value)
    except BadTraceparent:
        return Inbound(new_trace_id(), new_span_id(), None, bad=True)
    trace_id = caller.trace_id if caller is not None else new_trace_id()
    return Inbound(trace_id, new_span_id(), caller)


def lenient(value: str | None) -> TraceParent | None:
    """A stored header read back: None if it does not parse (stored before validation)."""
    try:
        return parse(value)
    except BadTraceparent:
        return None

