"""The read API of the covenant parties, in the manner of LDV's read extension.

A source party (police, OM, municipality: the covenant's `sources`) asks, with a read
token of its own (`covenant-broker web party-token create --party P`, kept as a SHA-256
like a recipient token, in a table of its own), what the broker did with its events: the
audit entries whose `source` is that party, by W3C trace id, by processing activity
(purpose and covenant version, or a processing activity URI) or by data subject
pseudonym. An entry of another party's event is never in an answer, whatever is asked.

Every answered read is exactly one `party_read` audit entry: the party, the token's id
(never the token), its origin, what was asked, and how many entries came back, in the
request's span (broker/web/access.py `party_accessor`); a read by pseudonym
names that pseudonym as its data subject, so the person's own report shows that the party
looked. A missing, unknown or revoked token is 401 and, as on the recipient API, not an
audit entry: nothing was read, and the recipient API does not audit a failed token either.

Answers are bounded twice: at most `limit` entries, and at most MAX_SCAN entries examined
per request, so a rare trace id in a long log costs bounded work; `next_after` is where to
go on (null: there is nothing more). One route per kind of question, each with its
parameter required, so every request the spec allows is one the API answers. A pseudonym
travels in a POST body, never in the URL, so no proxy or access log holds it. Restrictions
of confidential purposes apply to subject reports, not here: the source of an event knows
what it sent.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, field_validator

from broker.app.service import Broker
from broker.audit.access import Accessor
from broker.audit.entries import draft
from broker.audit.export_ldv import processing_activity
from broker.audit.service import AuditLog
from broker.audit.store import QueryFilter
from broker.clock import to_millis
from broker.model.render import to_json
from broker.web.access import party_accessor
from broker.web.auth import token_party, unauthorized
from broker.web.recipient_api import MAX_OFFSET, PURPOSE_PATTERN, ErrorBody
from broker.web.state import WebState
from broker.web.worker import BrokerWorker

MAX_LIMIT = 500
DEFAULT_LIMIT = 100
MAX_SCAN = 10_000  # entries examined per request, matched or not
TRACE_PATTERN = r"^[0-9a-f]{32}$"  # W3C trace-id: 16 bytes, lowercase hex
PSEUDONYM_PATTERN = r"^[0-9a-f]{32}$"

party_bearer = HTTPBearer(auto_error=False, scheme_name="partyToken",
                          description="The read token of one covenant party (`covenant-broker "
                          "web party-token create --party P`), as `Authorization: Bearer "
                          "<token>`. A recipient API token is not one.")


class DataSubjectRef(BaseModel):
    pseudonym: str
    id_type: str
    role: str


class PartyEntry(BaseModel):
    """One audit entry about one of the party's events, as the audit log holds it."""

    seq: int = Field(description="the entry's position in the verifiable log (`audit prove`)")
    name: str = Field(description="decide, quarantine, ...")
    status: str
    time: str = Field(description="start_time, ISO-8601 UTC")
    logged_at: str
    trace_id: str
    span_id: str
    event_type: str | None
    event_id: str | None
    event_offset: int | None
    purpose: str | None
    processing_activity_id: str | None = Field(
        default=None, description="the purpose's processing activity URI, when the entry "
        "carries one")
    covenant_id: str | None
    covenant_version: int | None
    legal_basis: str | None
    recipient: str | None
    decision: str | None
    reason_code: str | None
    reason: str | None
    fields_released: list[str]
    fields_withheld: list[str]
    policy_hash: str | None
    data_subjects: list[DataSubjectRef]


class PartyPage(BaseModel):
    party: str
    selector: str = Field(description="trace_id, processing_activity or data_subject")
    entries: list[PartyEntry]
    next_after: int | None = Field(description="pass as `after` for the next page; null "
                                   "when there is nothing more")


class SubjectQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pseudonym: str = Field(pattern=PSEUDONYM_PATTERN, description="a data subject pseudonym "
                           "as the entries name it (32 lowercase hex digits)")
    after: int | None = Field(default=None, ge=0, le=MAX_OFFSET,
                              description="only entries after this seq (a page's next_after)")
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)

    @field_validator("after", "limit", mode="before")
    @classmethod
    def _a_json_number(cls, value: Any) -> Any:
        # JSON's integers, 5.0 among them; not false (a bool is an int in Python) nor "5"
        if isinstance(value, bool | str):
            raise ValueError("a whole number is required")
        return value


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "no token, or an unknown or revoked party token"},
    503: {"model": ErrorBody, "description": "this backend has no searchable audit log yet"},
}

router = APIRouter(prefix="/v1/party", tags=["party"])


@dataclass(frozen=True)
class Caller:
    party: str
    token_id: str


def party_caller(request: Request,
                 credentials: Annotated[HTTPAuthorizationCredentials | None,
                                        Depends(party_bearer)]) -> Caller:
    """The party a read token belongs to, or 401 (not audited: nothing was read)."""
    state: WebState = request.app.state.web_state
    found = token_party(state, credentials)
    if found is None:
        raise unauthorized(credentials, "a party read token is required",
                           "unknown or revoked party token")
    return Caller(*found)


PartyCaller = Annotated[Caller, Depends(party_caller)]


@dataclass(frozen=True)
class Selector:
    """What a read asks for: exactly one of trace id, processing activity, pseudonym."""

    kind: str
    trace_id: str | None = None
    purpose: str | None = None
    covenant_version: int | None = None
    activity_id: str | None = None
    pseudonym: str | None = None

    def detail(self) -> dict[str, str]:
        """The audit detail of the question (no personal value: the pseudonym is the
        entry's data subject instead)."""
        out = {"selector": self.kind}
        for key, value in (("trace_id", self.trace_id), ("purpose", self.purpose),
                           ("covenant_version", self.covenant_version),
                           ("processing_activity_id", self.activity_id)):
            if value is not None:
                out[key] = str(value)
        return out


def _candidates(broker: Broker, audit: AuditLog, party: str, selector: Selector,
                after: int) -> Iterator[tuple[int, bytes]]:
    """Entries that may match, in seq order after `after`, through an index."""
    store = audit.store
    if selector.pseudonym is not None:
        seqs = [s for s in store.subject_seqs(bytes.fromhex(selector.pseudonym)) if s > after]
        for i in range(0, len(seqs), 500):
            yield from store.audit_entries_at(seqs[i:i + 500])
    elif selector.purpose is not None:
        yield from store.query(QueryFilter(purpose=selector.purpose, after_seq=after))
    else:  # by trace id or activity URI: the entries of the party's own event types
        types = sorted(t for t in broker.registry.event_types()
                       if t.split(".", 1)[0] == party)
        yield from heapq.merge(*(store.query(QueryFilter(event_type=t, after_seq=after))
                                 for t in types), key=itemgetter(0))


def _matches(entry: dict[str, Any], selector: Selector, activity: str | None) -> bool:
    if selector.trace_id is not None:
        return bool(entry.get("trace_id") == selector.trace_id)
    if selector.pseudonym is not None:
        return any(s["pseudonym"] == selector.pseudonym
                   for s in entry.get("data_subjects") or ())
    if selector.activity_id is not None:
        return activity == selector.activity_id
    return entry.get("purpose") == selector.purpose and (
        selector.covenant_version is None or
        entry.get("covenant_version") == selector.covenant_version)


def _entry(entry: dict[str, Any], activity: str | None) -> PartyEntry:
    return PartyEntry(
        seq=entry["seq"], name=entry["name"], status=entry["status"],
        time=entry["start_time"], logged_at=entry["logged_at"], trace_id=entry["trace_id"],
        span_id=entry["span_id"], event_type=entry.get("event_type"),
        event_id=entry.get("event_id"), event_offset=entry.get("event_offset"),
        purpose=entry.get("purpose"),
        processing_activity_id=activity,
        covenant_id=entry.get("covenant_id"), covenant_version=entry.get("covenant_version"),
        legal_basis=entry.get("legal_basis"), recipient=entry.get("recipient"),
        decision=entry.get("decision"), reason_code=entry.get("reason_code"),
        reason=entry.get("reason"), fields_released=entry.get("fields_released") or [],
        fields_withheld=entry.get("fields_withheld") or [],
        policy_hash=entry.get("policy_hash"),
        data_subjects=[DataSubjectRef(**s) for s in entry.get("data_subjects") or ()])


def _read(broker: Broker, caller: Caller, accessor: Accessor, selector: Selector,
          after: int | None, limit: int, now: datetime) -> PartyPage | None:
    """One read, and its one audit entry; None when there is no audit log to read."""
    audit = broker.audit
    if audit is None:
        return None
    activity_of = broker.activity_lookup()
    found: list[PartyEntry] = []
    next_after: int | None = None
    for examined, (seq, data) in enumerate(_candidates(broker, audit, caller.party, selector,
                                                       -1 if after is None else after)):
        if examined >= MAX_SCAN:
            break  # bounded work: the caller goes on from the last entry examined
        next_after = seq
        entry: dict[str, Any] = to_json(audit.schema.decode(data))
        # The one rule that keeps parties apart: only entries of this party's own events.
        if entry.get("source") != caller.party:
            continue
        activity = processing_activity(entry, activity_of)
        if not _matches(entry, selector, activity):
            continue
        found.append(_entry({**entry, "seq": seq}, activity))
        if len(found) >= limit:
            break
    else:
        next_after = None  # every candidate was examined: nothing more
    now_ms = to_millis(now)
    header = broker.covenant.covenant
    broker.log.append_audit([draft(
        "party_read", **accessor.trace_fields(), start_ms=now_ms, covenant_id=header.id,
        covenant_version=header.version,
        data_subjects=([{"pseudonym": selector.pseudonym, "id_type": "pseudonym",
                         "role": "lookup"}] if selector.pseudonym else []),
        detail={"party": caller.party, **accessor.detail(), **selector.detail(),
                "after": "" if after is None else str(after),
                "returned": str(len(found))})], now_ms)
    return PartyPage(party=caller.party, selector=selector.kind, entries=found,
                     next_after=next_after)


async def _answer(request: Request, caller: Caller, selector: Selector, after: int | None,
                  limit: int) -> PartyPage:
    worker: BrokerWorker = request.app.state.worker
    now: datetime = request.app.state.clock()
    accessor = party_accessor(request, caller.party, caller.token_id)
    page = await worker.call(lambda b: _read(b, caller, accessor, selector, after, limit, now))
    if page is None:
        raise HTTPException(503, "this backend has no searchable audit log yet")
    return page


def _known_query(*names: str) -> Any:
    """A dependency: 422 for a query parameter the route does not take, so a misspelt
    `limt` or `afer` is an error and not a silently different question."""
    allowed = set(names)

    def check(request: Request) -> None:
        if any(key not in allowed for key in request.query_params):
            raise RequestValidationError([{"loc": ("query",), "type": "extra_forbidden",
                                           "msg": "unknown query parameter; this route "
                                           f"takes {', '.join(sorted(allowed)) or 'none'}"}])
    return Depends(check)


After = Annotated[int | None, Query(ge=0, le=MAX_OFFSET, description="only entries after "
                                   "this seq (a page's next_after)")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="at most this many entries")]


@router.get("/traces/{trace_id}/disclosures", response_model=PartyPage, responses=_ERRORS,
            dependencies=[_known_query("after", "limit")],
            summary="what was done with this party's events of one trace (each read audited)")
async def by_trace(request: Request, caller: PartyCaller,
                   trace_id: Annotated[str, Path(pattern=TRACE_PATTERN,
                                                 description="a W3C trace id")],
                   after: After = None, limit: Limit = DEFAULT_LIMIT) -> PartyPage:
    return await _answer(request, caller, Selector("trace_id", trace_id=trace_id), after,
                         limit)


@router.get("/purposes/{purpose}/disclosures", response_model=PartyPage, responses=_ERRORS,
            dependencies=[_known_query("covenant_version", "after", "limit")],
            summary="what was done with this party's events under one processing activity: "
            "a purpose, optionally one covenant version (each read audited)")
async def by_purpose(request: Request, caller: PartyCaller,
                     purpose: Annotated[str, Path(pattern=PURPOSE_PATTERN,
                                                  description="a purpose name")],
                     covenant_version: Annotated[int | None, Query(
                         ge=1, le=MAX_OFFSET, description="only this covenant version")] = None,
                     after: After = None, limit: Limit = DEFAULT_LIMIT) -> PartyPage:
    selector = Selector("processing_activity", purpose=purpose,
                        covenant_version=covenant_version)
    return await _answer(request, caller, selector, after, limit)


@router.get("/processing-activities/disclosures", response_model=PartyPage,
            dependencies=[_known_query("processing_activity_id", "after", "limit")],
            responses=_ERRORS,
            summary="what was done with this party's events under one processing activity "
            "URI (each read audited)")
async def by_activity(request: Request, caller: PartyCaller,
                      processing_activity_id: Annotated[str, Query(
                          min_length=1, max_length=500,
                          description="a processing activity URI: the entry's own, or the "
                          "covenant's for the entry's purpose and version")],
                      after: After = None, limit: Limit = DEFAULT_LIMIT) -> PartyPage:
    selector = Selector("processing_activity", activity_id=processing_activity_id)
    return await _answer(request, caller, selector, after, limit)


@router.post("/disclosures/by-subject", response_model=PartyPage,
            dependencies=[_known_query()],
             responses={**_ERRORS, 400: {"model": ErrorBody,
                                         "description": "a body that is not JSON"}},
             summary="what was done with this party's events about one data subject "
             "(the pseudonym in the body, never in the URL; each read audited)")
async def disclosures_by_subject(request: Request, caller: PartyCaller,
                                 body: SubjectQuery) -> PartyPage:
    return await _answer(request, caller, Selector("data_subject", pseudonym=body.pseudonym),
                         body.after, body.limit)
