"""A request-body limit on every route, enforced while the body is read.

A pure ASGI middleware, outside the routes, the session and the authentication: a request
that declares a `Content-Length` above the limit is answered 413 before the app sees it,
and a body sent without a length (chunked) is counted as it arrives and cut off the moment
it passes the limit. So at most `limit` bytes of one request are ever held, whether or not
the caller is authenticated (routes check a token or session only after FastAPI has read
the body). The app's own answer to a cut-off body (FastAPI turns the interrupted read into
a 400) is dropped for the 413.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI reads the defaults without loading the web stack
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

KIB = 1024
MIB = 1024 * KIB
DEFAULT_MAX_BODY_BYTES = 1 * MIB
# The console's policy-impact page takes a covenant file upload (a few KB in practice).
DEFAULT_MAX_UPLOAD_BYTES = 1 * MIB
MAX_BODY_LIMIT = 16 * MIB  # the most a setting may allow: a body is held in memory or spooled
IMPACT_PATH = "/console/impact"


class BodyTooLarge(Exception):  # noqa: N818 - the ASGI receive's signal, not an error class
    """Raised into the app from `receive` once the body has passed the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than {limit} bytes")
        self.limit = limit


def check_limit(name: str, value: int) -> int:
    """A body-limit setting within 1 byte .. MAX_BODY_LIMIT; ValueError naming it if not."""
    if not 1 <= value <= MAX_BODY_LIMIT:
        raise ValueError(f"{name} must be between 1 and {MAX_BODY_LIMIT} bytes, not {value}")
    return value


class BodyLimit:
    """413 for a body above `limit` bytes (`paths` maps an exact path to its own limit)."""

    def __init__(self, app: ASGIApp, limit: int = DEFAULT_MAX_BODY_BYTES,
                 paths: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.limit = check_limit("max_body_bytes", limit)
        self.paths = {path: check_limit(f"body limit of {path}", n)
                      for path, n in (paths or {}).items()}

    def limit_for(self, path: str) -> int:
        return self.paths.get(path.rstrip("/") or "/", self.limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = _content_length(scope)
        if declared is None or declared > limit:  # unreadable or too large: never read it
            await _refuse(send, limit, status=400 if declared is None else 413)
            return
        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise BodyTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise BodyTooLarge(limit)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded and not started:  # the app's answer to a body it may not read
                return
            started = True
            await send(message)

        with contextlib.suppress(BodyTooLarge):
            await self.app(scope, limited_receive, guarded_send)
        if exceeded and not started:
            await _refuse(send, limit)


def _content_length(scope: Scope) -> int | None:
    """The declared length; 0 when none is declared (chunked, or no body); None when the
    header is not a plain non-negative number or occurs twice."""
    values = [v for k, v in scope.get("headers", ()) if k.lower() == b"content-length"]
    if not values:
        return 0
    text = values[0].strip() if len(values) == 1 else b""
    if not text.isdigit():
        return None
    # More digits than any limit has: too large, and not parsed (int() refuses > 4300 digits)
    return MAX_BODY_LIMIT + 1 if len(text) > 18 else int(text)


async def _refuse(send: Send, limit: int, status: int = 413) -> None:
    reason = (f"the request body is larger than this route accepts ({limit} bytes)"
              if status == 413 else "the Content-Length header is not one plain number")
    body = json.dumps({"detail": reason}).encode("utf-8")
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"),
        (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
