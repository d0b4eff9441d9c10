"""Who is asking, and from where, for the access entries of the web face (NEN 7513).

The request's span is made once per request by the app's middleware (broker/web/app.py):
in the caller's trace when it sent a valid `traceparent`, the answer's `traceparent`
header names it, and the request's audit entry is that span. The origin is the client
address as the app sees it: the TCP peer, or what a trusted proxy forwarded, as uvicorn
was told to believe (broker/cli/web.py server_config); never a header read here.

A recipient system may name its own end user (a boa's number, say) in `X-End-User`. The
value is never stored: the entry holds a keyed pseudonym, HMAC-SHA256 under a key of its
own per recipient (derived from the data dir's `end-user` secret), so the same person
gives the same pseudonym within one recipient's entries and unlinkable ones across
recipients; the recipient, who knows its users, can ask which entries are whose.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from fastapi import HTTPException, Request

from broker.audit import trace
from broker.audit.access import Accessor
from broker.keys import keyed_pseudonym

END_USER_HEADER = "X-End-User"
END_USER_SECRET = "end-user"  # noqa: S105 - the key file's name, not a secret
_END_USER = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]{0,126}[\x21-\x7e])?")  # printable ASCII


def request_span(request: Request) -> trace.Inbound:
    """The request's span (the middleware's; a fresh one outside it, as in a unit test)."""
    span = getattr(request.state, "span", None)
    if isinstance(span, trace.Inbound):
        return span
    span = request.state.span = trace.inbound(None)
    return span


def origin(request: Request) -> str | None:
    return request.client.host if request.client else None


def end_user_key(secret: bytes, recipient: str) -> bytes:
    """The recipient's own end-user pseudonym key."""
    return hmac.new(secret, f"end-user|{recipient}".encode(), hashlib.sha256).digest()


def end_user(request: Request, recipient: str) -> str | None:
    """The keyed pseudonym of the end user the recipient system named, or None; 400 for a
    value that is not 1 to 128 printable characters (the value is never echoed)."""
    values = request.headers.getlist(END_USER_HEADER)
    if not values:
        return None
    if len(values) > 1 or not _END_USER.fullmatch(values[0]):
        raise HTTPException(400, f"{END_USER_HEADER} is one header of 1 to 128 printable "
                            "ASCII characters")
    secret: bytes = request.app.state.end_user_secret
    return keyed_pseudonym(end_user_key(secret, recipient), values[0])


def recipient_accessor(request: Request, recipient: str) -> Accessor:
    """A recipient system's request: its token id, its end user, its origin."""
    token_id = getattr(request.state, "token_id", None)
    return Accessor("http", origin=origin(request),
                    token_id=token_id if isinstance(token_id, str) else None,
                    end_user=end_user(request, recipient), span=request_span(request),
                    entity=trace.recipient_uri(recipient))


def party_accessor(request: Request, party: str, token_id: str) -> Accessor:
    """A covenant party's read of what was disclosed from its events: its read token's id,
    its origin, and the request's span (the caller's trace when it sent one)."""
    return Accessor("http", origin=origin(request), token_id=token_id,
                    span=request_span(request), entity=trace.party_uri(party))


def console_accessor(request: Request, user: str | None) -> Accessor:
    """The privacy officer's request: the FG account (None for a login that names no
    account) and its origin."""
    return Accessor("console", origin=origin(request), user=user, span=request_span(request),
                    entity=None)
