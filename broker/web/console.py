"""The privacy officer's console: read-only pages behind an FG login.

Pages: the covenant for people, an audit search, a subject report, the verification
status and the impact of a proposed covenant. Every form posts a CSRF token bound to the
session; the session cookie is signed, SameSite=strict and expires. A BSN travels only in
a POST body: it is pseudonymised with the subject key on the worker thread and dropped;
the page shows the pseudonym, and the lookup itself is audited (by whom, about which
pseudonym). Nothing personal is put in a URL.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import re
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from broker.app import lifecycle
from broker.app.confidential import confidential_pairs
from broker.app.service import Broker
from broker.audit.checkpoint import verifier_key_string
from broker.audit.entries import draft
from broker.audit.service import AuditLog
from broker.audit.store import QueryFilter
from broker.audit.subject_report import SECTIONS
from broker.clock import from_millis, iso_instant, now_utc, to_millis
from broker.config.yaml_file import MAX_YAML_BYTES
from broker.errors import BrokerError, CovenantError
from broker.keys import keyed_pseudonym
from broker.logs import get_logger
from broker.policy.covenant import parse_covenant
from broker.policy.register import build_register
from broker.web import auth
from broker.web.access import console_accessor
from broker.web.console_views import (
    ACTIONS_NL,
    DECISIONS_NL,
    ActiveVersion,
    age_text,
    audit_page,
    covenant_overview,
    when,
)
from broker.web.state import WebState
from broker.web.throttle import LoginThrottle, login_keys
from broker.web.worker import BrokerWorker

PAGE_SIZE = 25
MAX_PAGE = 10_000
MAX_UPLOAD_BYTES = MAX_YAML_BYTES  # a covenant upload; the bounded loader's own limit
_BSN = re.compile(r"\d{9}")
_LOCAL_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")

templates = Jinja2Templates(directory=Path(__file__).resolve().parent / "templates")
router = APIRouter(prefix="/console", include_in_schema=False)


class LoginRequired(Exception):  # noqa: N818 - a redirect, not an error
    pass


async def to_login(request: Request, exc: Exception) -> Response:
    return RedirectResponse("/console/login", status_code=303)


def fg_user(request: Request) -> str:
    user = auth.session_user(request)
    if user is None:
        raise LoginRequired
    return user


FgUser = Annotated[str, Depends(fg_user)]


def _worker(request: Request) -> BrokerWorker:
    worker: BrokerWorker = request.app.state.worker
    return worker


def _now(request: Request) -> datetime:
    now: datetime = request.app.state.clock()
    return now


def _page(request: Request, name: str, context: dict[str, Any], status: int = 200
          ) -> HTMLResponse:
    worker = _worker(request)
    zone = worker.broker.covenant.zone  # immutable after start: safe to read here
    base = {"user": auth.session_user(request), "csrf": auth.csrf_token(request),
            "page": name.removesuffix(".html"), "when": lambda iso: when(iso, zone),
            "actions": ACTIONS_NL, "decisions": DECISIONS_NL,
            "covenant_title": worker.broker.covenant.covenant.title}
    return templates.TemplateResponse(request, name, {**base, **context},
                                      status_code=status)


def _refused(request: Request) -> HTMLResponse:
    return _page(request, "error.html", {"message": "Het formulier is verlopen of niet "
                                         "afkomstig van deze site. Laad de pagina opnieuw."},
                 status=400)


def _audit_log(broker: Broker) -> AuditLog | None:
    return broker.audit


def _record_use(broker: Broker, request: Request, name: str, user: str | None,
                detail: dict[str, str], **fields: Any) -> None:
    """The FG's use of the log, audited like any access (NEN 7513): one entry per action,
    naming the account and the origin; called on the worker thread."""
    who = console_accessor(request, user)
    now_ms = to_millis(_now(request))
    header = broker.covenant.covenant
    broker.log.append_audit([draft(
        name, start_ms=now_ms, **who.trace_fields(), covenant_id=header.id,
        covenant_version=header.version, detail={**who.detail(), **detail}, **fields)],
        now_ms)
    broker.metrics.observe_audit(1)


async def _record(request: Request, name: str, user: str | None, detail: dict[str, str]
                  ) -> None:
    await _worker(request).call(lambda b: _record_use(b, request, name, user, detail))


# -- login ------------------------------------------------------------------------------------

@router.get("/login")
async def login_form(request: Request) -> HTMLResponse:
    return _page(request, "login.html", {"failed": False})


@router.post("/login")
async def login(request: Request, username: Annotated[str, Form(max_length=100)],
                password: Annotated[str, Form(max_length=1000)],
                csrf: Annotated[str, Form(max_length=100)] = "") -> Response:
    if not auth.csrf_ok(request, csrf):
        return _refused(request)
    state: WebState = request.app.state.web_state
    throttle: LoginThrottle = request.app.state.login_throttle
    # The TCP peer's address, or a trusted proxy's X-Forwarded-For as uvicorn was told to
    # believe (cli/web.py server_config); never a header read here.
    stored = state.fg_password_hash(username)
    keys, now = login_keys(username, request.client.host if request.client else None,
                           account_exists=stored is not None), _now(request)
    # A failed login names the account only if it exists: a mistyped name can be a
    # password typed in the wrong field.
    named = username if stored is not None else None
    wait = throttle.retry_after(keys, now)
    if wait is not None:  # refused before the password is even checked
        get_logger().info("fg login throttled")
        await _record(request, "login", named, {"outcome": "throttled"})
        minutes = max(1, -(-int(wait.total_seconds()) // 60))
        response = _page(request, "login.html", {"failed": False, "wait_minutes": minutes},
                         status=429)
        response.headers["Retry-After"] = str(max(1, int(wait.total_seconds())))
        return response
    if not auth.check_password(stored, password):
        throttle.failed(keys, now)
        get_logger().info("fg login refused")
        await _record(request, "login", named, {"outcome": "refused"})
        return _page(request, "login.html", {"failed": True}, status=401)
    throttle.succeeded(keys[0])
    auth.start_session(request, username)
    get_logger().info("fg login")
    await _record(request, "login", username, {"outcome": "ok"})
    return RedirectResponse("/console/", status_code=303)


@router.post("/logout")
async def logout(request: Request, csrf: Annotated[str, Form(max_length=100)] = ""
                 ) -> Response:
    if auth.csrf_ok(request, csrf):
        user = auth.session_user(request)
        auth.end_session(request)
        if user is not None:
            await _record(request, "logout", user, {})
    return RedirectResponse("/console/login", status_code=303)


# -- the covenant -----------------------------------------------------------------------------

@router.get("/")
async def overview(request: Request, user: FgUser) -> HTMLResponse:
    now = _now(request)

    def build(broker: Broker) -> dict[str, Any]:
        control = broker.control_state()
        activation = control.covenant_at(to_millis(now))
        if activation is None:
            covenant, active = broker.covenant, ActiveVersion(
                broker.covenant.covenant.version, broker.policy_sha, None, ())
        else:
            covenant, sha = broker.covenant_version(activation.version)
            active = ActiveVersion(activation.version, sha, activation.effective_ms,
                                   activation.approvers)
        return covenant_overview(covenant, broker.registry, control, to_millis(now), active)

    covenant = await _worker(request).call(build)
    if covenant["since_ms"] is not None:
        covenant["since"] = iso_instant(from_millis(covenant["since_ms"]))
    return _page(request, "overview.html", {"c": covenant})


@router.get("/register")
async def register(request: Request, user: FgUser) -> HTMLResponse:
    """The AVG art. 30 register of the covenant in force, on a page of its own."""
    at_ms = to_millis(_now(request))

    def build(broker: Broker) -> dict[str, Any]:
        return build_register(*broker.active_covenant(at_ms))

    return _page(request, "register.html", {"r": await _worker(request).call(build)})


# -- audit search -----------------------------------------------------------------------------

def _local_ms(text: str, request: Request) -> int | None:
    """A `datetime-local` value, read in the covenant's zone."""
    if not _LOCAL_TIME.fullmatch(text):
        raise ValueError(text)
    zone = _worker(request).broker.covenant.zone
    return to_millis(datetime.fromisoformat(text).replace(tzinfo=zone))


@router.get("/audit")
async def audit_search(request: Request, user: FgUser, recipient: str = "",
                       purpose: str = "", decision: str = "", event_type: str = "",
                       action: str = "", since: str = "", until: str = "",
                       page: str = "1") -> HTMLResponse:
    form = {"recipient": recipient, "purpose": purpose, "decision": decision,
            "event_type": event_type, "action": action, "since": since, "until": until}
    errors = []
    try:
        since_ms = _local_ms(since, request) if since else None
    except ValueError:
        errors.append("'Vanaf' is geen geldige datum en tijd.")
        since_ms = None
    try:
        until_ms = _local_ms(until, request) if until else None
    except ValueError:
        errors.append("'Tot' is geen geldige datum en tijd.")
        until_ms = None
    number = int(page) if page.isdigit() and 1 <= int(page) <= MAX_PAGE else 1
    where = QueryFilter(recipient=recipient or None, purpose=purpose or None,
                        decision=decision or None, event_type=event_type or None,
                        name=action or None, since_ms=since_ms, until_ms=until_ms)

    def run(broker: Broker) -> dict[str, Any]:
        audit = _audit_log(broker)
        options = {"recipients": list(broker.covenant.recipients),
                   "purposes": list(broker.covenant.purposes),
                   "event_types": sorted(broker.registry.event_types())}
        # which filters were used, never their values (a field typed in may hold anything)
        _record_use(broker, request, "audit_search", user, {
            "filters": ",".join(k for k, v in form.items() if v), "page": str(number)})
        if audit is None or errors:
            return {**options, "entries": [], "total": 0, "available": audit is not None}
        entries, total = audit_page(audit, where, number, PAGE_SIZE)
        return {**options, "entries": entries, "total": total, "available": True}

    found = await _worker(request).call(run)
    filters = {k: v for k, v in form.items() if v}
    pages = max(1, -(-found["total"] // PAGE_SIZE))
    link = {n: "/console/audit?" + urlencode({**filters, "page": n})
            for n in (number - 1, number + 1) if 1 <= n <= pages}
    return _page(request, "audit.html", {**found, "form": form, "errors": errors,
                                         "number": number, "pages": pages, "link": link,
                                         "page_size": PAGE_SIZE})


# -- subject report ---------------------------------------------------------------------------

@router.get("/subject")
async def subject_form(request: Request, user: FgUser) -> HTMLResponse:
    return _page(request, "subject.html", {"report": None, "error": None})


@router.post("/subject")
async def subject(request: Request, user: FgUser,
                  bsn: Annotated[str, Form(max_length=64)] = "",
                  csrf: Annotated[str, Form(max_length=100)] = "") -> HTMLResponse:
    if not auth.csrf_ok(request, csrf):
        return _refused(request)
    bsn = bsn.strip()
    if not _BSN.fullmatch(bsn):
        return _page(request, "subject.html", {
            "report": None, "error": "Een BSN bestaat uit 9 cijfers."}, status=422)
    generated = iso_instant(_now(request))

    def report(broker: Broker) -> dict[str, Any] | None:
        audit = _audit_log(broker)
        if audit is None:
            return None
        pseudonym = keyed_pseudonym(broker.keys.subject_key(), f"bsn:{bsn}")
        covenant = broker.covenant
        describe = {f"recipient:{n}": r.description for n, r in covenant.recipients.items()}
        describe.update({f"purpose:{n}": p.description for n, p in covenant.purposes.items()})
        # The FG sees restricted entries, marked; the person's own report leaves them out.
        found = audit.subject_report(pseudonym, "bsn", generated, describe,
                                     confidential_pairs(broker), reveal_restricted=True)
        _record_use(broker, request, "subject_report", user,
                    {"items": str(sum(found["summary"][s] for s in SECTIONS))},
                    data_subjects=[{"pseudonym": pseudonym, "id_type": "bsn",
                                    "role": "lookup"}])
        return found

    found = await _worker(request).call(report)
    if found is None:
        return _page(request, "subject.html", {
            "report": None, "error": "Deze backend heeft (nog) geen doorzoekbaar auditlog."})
    return _page(request, "subject.html", {"report": found, "error": None,
                                           "sections": SECTIONS})


# -- verification -----------------------------------------------------------------------------

@router.get("/verificatie")
async def verification(request: Request, user: FgUser) -> HTMLResponse:
    now = now_utc()  # checkpoints are signed by the wall clock, whatever the decision clock

    def status(broker: Broker) -> dict[str, Any]:
        audit = _audit_log(broker)
        if audit is None:
            return {"available": False}
        latest = audit.store.latest_checkpoint()
        out: dict[str, Any] = {"available": True, "size": audit.store.audit_size(),
                               "origin": audit.origin, "verifier_key": audit.verifier_key(),
                               "checkpoint": None}
        if latest is not None:
            signed = from_millis(latest.signed_ms)
            out["checkpoint"] = {"size": latest.size, "note": latest.note,
                                 "signed_at": iso_instant(signed),
                                 "age": age_text((now - signed).total_seconds())}
        return out

    found = await _worker(request).call(status)
    options = request.app.state.options
    return _page(request, "verify.html", {
        **found, "last": request.app.state.last_verify,
        "pinned_key": (verifier_key_string(options.pinned_key.name, options.pinned_key.public_key)
                       if options.pinned_key else None),
        "trusted_checkpoints": len(options.trusted_checkpoints)})


@router.post("/verificatie")
async def verify_now(request: Request, user: FgUser,
                     csrf: Annotated[str, Form(max_length=100)] = "") -> Response:
    if not auth.csrf_ok(request, csrf):
        return _refused(request)

    def run(broker: Broker) -> dict[str, Any] | None:
        audit = _audit_log(broker)
        if audit is None:
            return None
        started = time.perf_counter()
        pinned = request.app.state.options.pinned_key
        result = audit.verify_pinned(pinned, None, request.app.state.options.trusted_checkpoints,
                                     require_signed=False).as_json()
        result["pinned"] = pinned is not None
        sources = _kafka_sources(broker)
        problem = result["problem"] or sources.pop("problem", None)
        result.update(sources, ok=problem is None, problem=problem)
        # after the run: the entry is not part of what it verified
        _record_use(broker, request, "verify", user, {
            "ok": "true" if problem is None else "false", "pinned": str(pinned is not None
                                                                       ).lower()})
        return {**result, "seconds": round(time.perf_counter() - started, 3)}

    result = await _worker(request).call(run)
    if result is not None:
        request.app.state.last_verify = {**result, "by": user,
                                         "at": iso_instant(now_utc())}
    return RedirectResponse("/console/verificatie", status_code=303)


def _kafka_sources(broker: Broker) -> dict[str, Any]:
    """Kafka: the audit chains against the integrated log, as `audit verify` checks them."""
    integrated, chains = broker.backend.integrated, broker.backend.partition_chains
    if integrated is None or chains is None:
        return {}
    check = chains.check_integrated(integrated)
    return {"pending": sum(check.pending.values()), "problem": check.problem}


# -- policy impact ----------------------------------------------------------------------------

def _proposals(broker: Broker, extra: list[Path]) -> dict[str, Path]:
    """Covenant files on the server to choose from, by a label relative to their folder."""
    out: dict[str, Path] = {}
    folders = [broker.policy_path.parent, broker.settings.data_dir / "proposals", *extra]
    for folder in folders:
        if folder.is_dir():
            for path in sorted(folder.rglob("*.yaml")):
                out.setdefault(f"{folder.name}/{path.relative_to(folder)}", path)
    return out


@router.get("/impact")
async def impact_form(request: Request, user: FgUser) -> HTMLResponse:
    extra = request.app.state.options.proposal_dirs
    files = await _worker(request).call(lambda b: list(_proposals(b, extra)))
    return _page(request, "impact.html", {"files": files, "result": None, "problems": []})


def _current_covenant(broker: Broker, now: datetime, folder: Path) -> tuple[Path, int]:
    """The covenant in force now as a file (an activated version is written out)."""
    activation = broker.control_state().covenant_at(to_millis(now))
    if activation is None or activation.sha256 == broker.policy_sha:
        return broker.policy_path, broker.covenant.covenant.version
    document = broker.log.document(activation.sha256)
    if document is None:
        return broker.policy_path, broker.covenant.covenant.version
    path = folder / "current.yaml"
    path.write_bytes(document)
    return path, activation.version


# A covenant upload is parsed by the bounded loader (no aliases, at most MAX_YAML_BYTES) on a
# pool thread before the broker's one worker thread sees it; the dry run itself stops at a
# deadline. Either bound passed gives an error page, never a hung server.
IMPACT_PARSE_SECONDS = 5.0
IMPACT_RUN_SECONDS = 60.0
_UPLOAD_LABEL = "geüpload bestand"


async def _upload_problems(data: bytes) -> list[str]:
    loop = asyncio.get_running_loop()
    # run_in_executor, not anyio's to_thread: its cancellation returns at once (the bounded
    # parse still finishes on its own), so wait_for is a real bound on the request
    parsing = loop.run_in_executor(None, functools.partial(parse_covenant, data, _UPLOAD_LABEL))
    try:
        await asyncio.wait_for(parsing, IMPACT_PARSE_SECONDS)
    except CovenantError as exc:
        return exc.problems
    except TimeoutError:
        return [f"Het bestand kon niet binnen {IMPACT_PARSE_SECONDS:g} seconden worden "
                "gelezen."]
    return []


@router.post("/impact")
async def impact(request: Request, user: FgUser,
                 choice: Annotated[str, Form(max_length=500)] = "",
                 upload: Annotated[UploadFile | None, File()] = None,
                 since: Annotated[str, Form(max_length=32)] = "",
                 csrf: Annotated[str, Form(max_length=100)] = "") -> HTMLResponse:
    if not auth.csrf_ok(request, csrf):
        return _refused(request)
    extra, now = request.app.state.options.proposal_dirs, _now(request)
    data = await upload.read(MAX_UPLOAD_BYTES + 1) if upload and upload.filename else None
    problems: list[str] = []
    if data is not None and len(data) > MAX_UPLOAD_BYTES:
        problems.append(f"Het bestand is groter dan {MAX_UPLOAD_BYTES // 1024} KiB.")
    elif data is not None:
        problems.extend(await _upload_problems(data))
    deadline = time.monotonic() + IMPACT_RUN_SECONDS  # also counts time queued on the worker
    since_ms = None
    if since:
        try:
            since_ms = _local_ms(since, request)
        except ValueError:
            problems.append("'Vanaf' is geen geldige datum en tijd.")

    def run(broker: Broker) -> dict[str, Any]:
        found = compute(broker)
        detail = {"proposal": "upload" if data is not None else
                  choice if choice in found["files"] else "none",
                  "outcome": "problems" if found["problems"] else "ok"}
        if data is not None:
            detail["sha256"] = hashlib.sha256(data).hexdigest()
        _record_use(broker, request, "impact", user, detail)
        return found

    def compute(broker: Broker) -> dict[str, Any]:
        files = _proposals(broker, extra)
        if problems:
            return {"files": list(files), "problems": problems}
        with tempfile.TemporaryDirectory(dir=broker.settings.data_dir) as tmp:
            folder = Path(tmp)
            if data is not None:
                proposed, label = folder / "proposed.yaml", _UPLOAD_LABEL
                proposed.write_bytes(data)
            elif choice in files:
                proposed, label = files[choice], choice
            else:
                return {"files": list(files), "problems": ["Kies een bestand of upload er "
                                                           "een."]}
            current, version = _current_covenant(broker, now, folder)
            start = from_millis(since_ms) if since_ms is not None else None
            try:
                examined, streams = lifecycle.policy_diff(broker, current, proposed, start,
                                                          deadline)
            except CovenantError as exc:
                return {"files": list(files), "problems": [
                    p.replace(str(proposed), label) for p in exc.problems]}
            except BrokerError as exc:
                return {"files": list(files),
                        "problems": [str(exc).replace(str(proposed), label)]}
        return {"files": list(files), "problems": [],
                "result": {"label": label, "version": version, "examined": examined,
                           "streams": [s.as_json() for s in streams],
                           "since": since or None}}

    try:  # the run stops itself at the deadline; this bounds the wait for the worker too
        found = await asyncio.wait_for(_worker(request).call(run), IMPACT_RUN_SECONDS + 5)
    except TimeoutError:
        found = {"files": [], "problems": [
            f"De berekening duurde langer dan {IMPACT_RUN_SECONDS:g} seconden en is gestopt."]}
    return _page(request, "impact.html", {"result": None, **found, "choice": choice},
                 status=422 if found["problems"] else 200)
