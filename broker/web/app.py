"""The ASGI app: the recipient API under /v1, the FG console under /console.

`create_app` opens the Broker on its worker thread at once (a bad configuration fails at
start, not at the first request) and closes it at shutdown, which signs a checkpoint over
what this process appended. Every response is `no-store` and carries strict security
headers. The request log names the route template (`/v1/streams/{purpose}/records`), never
the concrete path or query, so no value a caller typed reaches a log line.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from broker.app.service import Broker
from broker.audit import trace
from broker.audit.checkpoint import VerifierKey
from broker.clock import now_utc
from broker.config import Settings
from broker.errors import InputError
from broker.keys import KeyStore
from broker.logs import get_logger
from broker.web import console, party_api, recipient_api
from broker.web.access import END_USER_SECRET
from broker.web.body_limit import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_UPLOAD_BYTES,
    IMPACT_PATH,
    BodyLimit,
    check_limit,
)
from broker.web.state import WebState
from broker.web.throttle import LoginThrottle
from broker.web.worker import BrokerWorker

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "cb_console"
_CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'")

API_DESCRIPTION = """\
Delivery of released records to recipient systems under the covenant.

* Authenticate with the recipient's API token: `Authorization: Bearer <token>`. A token
  belongs to one recipient and reaches only that recipient's streams (one per purpose).
  Any other stream is refused with 403, and the refusal is written to the audit log.
* Read from an offset; the response's `next_offset` is where to ask next. Records carry
  the released view as `covenant-broker consume` prints it; a tombstone has
  `"tombstone": true`, `"tombstone_cause"` (`expired`; `erasure` when the data subject's
  personal data was erased; `rectified` or `withdrawn` when the source corrected or
  withdrew the event) and the reference of the record to delete.
* Long-poll with `wait` (seconds) to be answered as soon as a first record is there; the
  server may answer earlier, empty, at its own limit (a proxy's idle timeout, say).
* Every read is one `access` entry in the audit log, with the range it returned.
* Acknowledge the last offset processed with `POST .../ack`; it is stored and audited.

Covenant parties (the sources) read what was done with their own events under
`/v1/party/...`, with a party read token (`covenant-broker web party-token create`): by
trace id, processing activity or data subject pseudonym (in a POST body), paged with
`after`/`next_after`. A party sees only entries of its own events; every read is one
`party_read` audit entry.
* Each access entry names the token's id (never the token) and the client address. Name
  your own end user (a boa's number, say) in `X-End-User` (1 to 128 printable ASCII
  characters): the entry holds only a keyed pseudonym of it, one key per recipient.
* W3C trace context: send `traceparent` and the access entry goes on in your trace, your
  span recorded as the foreign operation; an invalid one is ignored. Every answer carries
  a `traceparent` naming the broker's span for the request, and every record the
  `traceparent` of the broker's span that released it.
"""


@dataclass
class WebOptions:
    """Settings of the web face; the CLI fills them from its flags."""

    clock: Callable[[], datetime] = now_utc
    poll_seconds: float = 0.5  # long-poll: how often to look for a first record
    max_wait_seconds: float = 30.0  # long-poll: the server's own cap on `wait`
    session_hours: float = 8.0
    secure_cookies: bool = False  # set behind TLS: the session cookie only over https
    proposal_dirs: list[Path] = field(default_factory=list)  # for the policy-impact page
    broker_factory: Callable[[Settings], Broker] = Broker
    # Request bodies: refused with 413 past these while being read (body_limit.py).
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES  # the impact page's covenant upload
    # Peers whose X-Forwarded-For / X-Forwarded-Proto uvicorn believes (cli/web.py); none
    # by default, so the client address the login throttle counts is the TCP peer's.
    trusted_proxies: tuple[str, ...] = ()
    # The privacy officer's trust anchors for the Verificatie page, kept outside what the
    # broker writes: a verifier key and signed checkpoints. Without them the page checks
    # the log against the data dir's own key and says that this proves little.
    pinned_key: VerifierKey | None = None
    trusted_checkpoints: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        try:
            check_limit("max_body_bytes", self.max_body_bytes)
            check_limit("max_upload_bytes", self.max_upload_bytes)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise InputError(f"a trusted proxy is an IP address or network, e.g. "
                                 f"10.0.0.5 or 10.0.0.0/24, not {proxy!r}") from None


def create_app(settings: Settings, options: WebOptions | None = None) -> FastAPI:
    options = options or WebOptions()
    worker = BrokerWorker(settings, options.broker_factory)

    running = [0]  # servers (or test clients) that started the app and have not stopped

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        running[0] += 1
        if running[0] == 1:  # the process starts serving: one broker_start (issue 15.11)
            await worker.call(lambda b: b.record_process("broker_start", options.clock()))
        try:
            yield
        finally:
            running[0] -= 1
            if not running[0]:  # the last one out closes the broker
                try:
                    await worker.call(lambda b: b.record_process("broker_stop",
                                                                 options.clock()))
                finally:
                    worker.close()

    app = _routes(FastAPI(title="covenant-broker delivery API", version="1",
                          description=API_DESCRIPTION, docs_url=None, redoc_url=None,
                          lifespan=lifespan))
    app.state.worker = worker
    app.state.web_state = WebState(settings.data_dir)
    app.state.login_throttle = LoginThrottle()
    app.state.clock = options.clock
    app.state.poll_seconds = options.poll_seconds
    app.state.max_wait_seconds = options.max_wait_seconds
    app.state.options = options
    app.state.settings = settings
    app.state.last_verify = None
    keys = KeyStore(settings.data_dir / "keys")
    secret = keys.secret("web-session")
    app.state.end_user_secret = keys.secret(END_USER_SECRET)  # web/access.py
    app.add_middleware(SessionMiddleware, secret_key=secret.hex(),
                       session_cookie=SESSION_COOKIE,
                       max_age=int(options.session_hours * 3600), same_site="strict",
                       https_only=options.secure_cookies)
    # Outside the session and every route (a body is bounded before the session is decoded
    # and before any route reads it or checks who is asking), inside the headers and the
    # request log, so a 413 carries the same headers and is logged as what it was.
    app.add_middleware(BodyLimit, limit=options.max_body_bytes,
                       paths={IMPACT_PATH: options.max_upload_bytes})
    app.middleware("http")(_headers_and_log)
    app.add_exception_handler(console.LoginRequired, console.to_login)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse("/console/", status_code=303)

    return app


def _routes(app: FastAPI) -> FastAPI:
    app.include_router(recipient_api.router)
    app.include_router(party_api.router)
    app.include_router(console.router)
    return app


def api_spec() -> dict[str, Any]:
    """The OpenAPI document /openapi.json serves, without opening a broker (docs, tests)."""
    spec: dict[str, Any] = _routes(FastAPI(title="covenant-broker delivery API", version="1",
                                           description=API_DESCRIPTION)).openapi()
    return spec


async def _headers_and_log(request: Request,
                           call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    started = time.perf_counter()
    # The request's span (W3C trace context, broker/audit/trace.py): its audit entry is
    # this span and the answer names it, so the caller can link its log to ours. Two
    # traceparent headers are as invalid as a malformed one: ignored, counted.
    sent = request.headers.getlist(trace.HEADER)
    span = request.state.span = trace.inbound(sent[0] if len(sent) == 1 else
                                              None if not sent else "")
    if span.bad:
        request.app.state.worker.broker.metrics.observe_bad_traceparents(1)
    response = await call_next(request)
    headers = response.headers
    headers[trace.HEADER] = span.traceparent
    headers.setdefault("Cache-Control", "no-store")
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    headers["Referrer-Policy"] = "no-referrer"
    headers["Content-Security-Policy"] = _CSP
    route: Any = request.scope.get("route")
    get_logger().info("http request", method=request.method,
                      route=getattr(route, "path", "(no route)"),
                      status=response.status_code,
                      ms=round((time.perf_counter() - started) * 1000, 1))
    return response


async def _invalid_request(request: Request, exc: Exception) -> Response:
    """422 naming where and why, without echoing the value (it may be a personal one)."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return JSONResponse({"detail": [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""),
                                     "type": e.get("type", "")} for e in errors]},
                        status_code=422)
