"""Who asked, and from where: what every access entry names (NEN 7513, BIO 8.15.01).

An access to the log's data (a recipient system's read, or the privacy officer's own use of
the log in the console) is audited with the credential's public id (an API token's id,
never the token; the FG account), the end user a recipient system names for its own user
(for example a boa's number), only as a keyed pseudonym per recipient, and the network
origin (the client address as the web app sees it, after the trusted-proxy rule). The
request's span (broker/audit/trace.py) gives the entry its trace: the caller's when the
request carried a valid traceparent.

All of it goes in the entry's `detail` map and the trace fields the schema already has:
audit_entry has no field for a credential or an origin, and a new field would change the
schema fingerprint every verifier checks the entries against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from broker.audit import trace

__all__ = ["Accessor"]


@dataclass(frozen=True)
class Accessor:
    """The party behind one request."""

    channel: str  # "http" (the recipient and party APIs), "console" (the FG), "cli"
    origin: str | None = None  # client address after the trusted-proxy rule; "local:<host>"
    token_id: str | None = None  # the API token's public id, never the token
    end_user: str | None = None  # keyed pseudonym of the end user a recipient system named
    user: str | None = None  # the FG account of a console session; the OS account (cli)
    span: trace.Inbound | None = None  # the request's span
    entity: str | None = None  # URI of the calling party, for the foreign operation

    def detail(self) -> dict[str, str]:
        """The `detail` entries: channel, credential, end user, origin, foreign entity."""
        out = {"channel": self.channel}
        for key, value in (("token_id", self.token_id), ("end_user", self.end_user),
                           ("by", self.user), ("origin", self.origin)):
            if value is not None:
                out[key] = value
        if self.span is not None and self.entity is not None:
            out.update(trace.foreign_detail(self.span.caller, self.entity))
        return out

    def trace_fields(self, first: bool = True) -> dict[str, Any]:
        """The draft's trace fields. The first entry of a request is the request's own span
        (the one its answer's traceparent names); any further one is a child of it."""
        if self.span is None:
            return {"trace_id": None}
        if first:
            return self.span.audit_fields()
        return {"trace_id": self.span.trace_id, "parent_span_id": self.span.span_id}
