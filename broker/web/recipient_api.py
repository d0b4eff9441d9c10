"""The delivery API for recipient systems: their own streams, records from an offset, acks.

One token is one recipient. A recipient reads only the purposes the covenant gives it: a
request for any other stream is refused with 403 and the refusal is audited (an `access`
entry with decision `refused`). A successful read is `Broker.consume` with one purpose,
which writes exactly one `access` entry with the range returned; this module adds none.
Long-poll: with `wait`, the handler looks (unaudited, nothing is delivered by looking)
until a record is there or the time is up, and then reads once.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from broker.app.service import Broker
from broker.audit.access import Accessor
from broker.audit.entries import draft
from broker.clock import to_millis
from broker.policy.catalog import catalog
from broker.web.access import recipient_accessor
from broker.web.auth import token_identity, unauthorized
from broker.web.state import WebState
from broker.web.worker import BrokerWorker

MAX_OFFSET = 2**53  # JSON-safe, and far below SQLite's integer limit
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
MAX_WAIT_SECONDS = 30
PURPOSE_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,99}$"
FINGERPRINT_PATTERN = r"^[0-9a-fA-F]{16}$"

bearer = HTTPBearer(auto_error=False, scheme_name="recipientToken",
                    description="The API token of one recipient (`covenant-broker web token "
                    "create --recipient R`), as `Authorization: Bearer <token>`.")


class ErrorBody(BaseModel):
    detail: str


class StreamInfo(BaseModel):
    purpose: str
    description: str
    legal_basis: str
    event_type: str
    retention_days: int
    next_offset: int = Field(description="the offset the next new record will get")
    acknowledged_offset: int | None = Field(description="the last offset this recipient "
                                            "acknowledged, if any")


class StreamList(BaseModel):
    recipient: str
    streams: list[StreamInfo]


class DeliveredRecord(BaseModel):
    """One record as `covenant-broker consume` prints it."""

    offset: int
    event_type: str
    purpose: str
    recipient: str
    record: dict[str, Any] = Field(description="the released view; instants ISO-8601 UTC, "
                                   "dates YYYY-MM-DD; for a tombstone: the reference "
                                   "(ref, released_offset) of the record to delete")
    tombstone: bool | None = Field(default=None, description="present and true for a "
                                   "tombstone: delete the record with this reference")
    tombstone_cause: Literal["expired", "erasure", "rectified", "withdrawn"] | None = Field(
        default=None, description="for a tombstone: expired (the basis ended), erasure "
        "(the data subject's personal data was erased: AVG art. 17 and 19), rectified (the "
        "source corrected the event; a corrected record follows where it is released) or "
        "withdrawn (the source withdrew the event: AVG art. 19)")
    erased_fields: list[str] | None = Field(default=None, description="fields that are null "
                                            "because their data subject was erased")
    traceparent: str | None = Field(default=None, description="W3C trace context of the "
                                    "broker's span that released this record: the "
                                    "recipient's own processing can name it as its parent")


class RecordPage(BaseModel):
    recipient: str
    purpose: str
    from_offset: int
    next_offset: int = Field(description="ask from here next time")
    records: list[DeliveredRecord]


class SchemaInfo(BaseModel):
    name: str = Field(description="the Avro full name")
    kind: Literal["events", "views", "records"]
    version: str = Field(description="current, or the file of an older writer version")
    fingerprint: str = Field(description="CRC-64-AVRO of the Parsing Canonical Form: the hex "
                             "of the 8 bytes after C3 01 in a single-object encoded value")
    used: list[str] = Field(description="where it is used; of the views, only this "
                            "recipient's streams")
    schema_: dict[str, Any] = Field(alias="schema", description="the full writer schema")
    canonical_form: str = Field(description="its Parsing Canonical Form")


class AckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    offset: int = Field(ge=0, le=MAX_OFFSET, description="the last offset processed")


class AckResult(BaseModel):
    recipient: str
    purpose: str
    acknowledged_offset: int
    previous_offset: int | None


_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "no token, or an unknown or revoked token"},
}
_STREAM_ERRORS: dict[int | str, dict[str, Any]] = {
    **_AUTH_ERRORS,
    403: {"model": ErrorBody, "description": "not one of this recipient's streams (audited)"},
}

router = APIRouter(prefix="/v1", tags=["recipient"])


def _worker(request: Request) -> BrokerWorker:
    worker: BrokerWorker = request.app.state.worker
    return worker


def _now(request: Request) -> datetime:
    now: datetime = request.app.state.clock()
    return now


def caller(request: Request,
           credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
           ) -> str:
    """The recipient the bearer token belongs to, or 401; the token's id is kept on the
    request for its access entry."""
    state: WebState = request.app.state.web_state
    identity = token_identity(state, credentials)
    if identity is None:
        raise unauthorized(credentials, "an API token is required",
                           "unknown or revoked API token")
    recipient, request.state.token_id = identity
    return recipient


Caller = Annotated[str, Depends(caller)]
PurposeName = Annotated[str, Path(pattern=PURPOSE_PATTERN, description="a purpose name")]
Fingerprint = Annotated[str, Path(pattern=FINGERPRINT_PATTERN,
                                  description="a schema fingerprint: 16 hex digits, as "
                                  "`covenant-broker schemas list` prints it")]


def purposes_of(broker: Broker, recipient: str) -> list[str]:
    return [name for name, purpose in broker.covenant.purposes.items()
            if recipient in purpose.recipient_names()]


def _refuse(broker: Broker, recipient: str, purpose: str, now: datetime,
            who: Accessor) -> str:
    """Audit a refused stream request; return the reason for the 403 body."""
    known = purpose in broker.covenant.purposes
    reason = (f"purpose {purpose!r} gives recipient {recipient!r} nothing" if known else
              "no such purpose in the covenant")
    header = broker.covenant.covenant
    broker.log.append_audit([draft(
        "access", start_ms=to_millis(now), **who.trace_fields(), recipient=recipient,
        purpose=purpose if known else None, covenant_id=header.id,
        covenant_version=header.version, decision="refused",
        reason_code="not_a_stream_of_recipient" if known else "unknown_purpose",
        reason=reason, detail=who.detail())], to_millis(now))
    return reason


async def _own_stream(request: Request, recipient: str, purpose: str) -> Accessor:
    """403 (audited) unless the covenant gives this recipient the purpose; who asks."""
    worker, now = _worker(request), _now(request)
    who = recipient_accessor(request, recipient)  # 400 for a bad X-End-User, before all

    def check(broker: Broker) -> str | None:
        if recipient in broker.covenant.recipients and \
                purpose in purposes_of(broker, recipient):
            return None
        return _refuse(broker, recipient, purpose, now, who)

    refused = await worker.call(check)
    if refused is not None:
        raise HTTPException(403, refused)
    return who


def _available(broker: Broker, recipient: str, purpose: str, from_offset: int,
               now: datetime) -> list[int]:
    """Offsets a read would return now: looked at, not delivered, so not an access."""
    now_ms = to_millis(now)
    return [r.offset for r in broker.log.read_egress(recipient, purpose, from_offset)
            if not broker.past_retention(r, now_ms)]  # the same rule as consume


@router.get("/streams", response_model=StreamList, responses=_AUTH_ERRORS,
            summary="this recipient's streams (its purposes under the covenant)")
async def list_streams(request: Request, recipient: Caller) -> StreamList:
    state: WebState = request.app.state.web_state
    acked = state.acked(recipient)

    def streams(broker: Broker) -> list[StreamInfo]:
        out = []
        for name in purposes_of(broker, recipient):
            purpose = broker.covenant.purposes[name]
            offsets = [r.offset for r in broker.log.read_egress(recipient, name, 0)]
            out.append(StreamInfo(purpose=name, description=purpose.description,
                                  legal_basis=purpose.legal_basis,
                                  event_type=purpose.event_type,
                                  retention_days=purpose.retention_days,
                                  next_offset=max(offsets, default=-1) + 1,
                                  acknowledged_offset=acked.get(name)))
        return out

    return StreamList(recipient=recipient, streams=await _worker(request).call(streams))


@router.get("/streams/{purpose}/records", response_model=RecordPage,
            responses=_STREAM_ERRORS,
            summary="records of one stream from an offset, tombstones included (audited)")
async def read_records(
    request: Request, recipient: Caller, purpose: PurposeName,
    from_offset: Annotated[int, Query(ge=0, le=MAX_OFFSET,
                                      description="the first offset wanted")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT,
                                description="at most this many records")] = DEFAULT_LIMIT,
    wait: Annotated[int, Query(ge=0, le=MAX_WAIT_SECONDS,
                               description="long-poll: seconds to wait for a first record "
                               "when there is none yet")] = 0,
) -> JSONResponse:
    who = await _own_stream(request, recipient, purpose)
    worker = _worker(request)
    if wait:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(wait, request.app.state.max_wait_seconds)
        interval: float = request.app.state.poll_seconds
        while not await worker.call(lambda b: _available(b, recipient, purpose, from_offset,
                                                         _now(request))):
            left = deadline - loop.time()
            if left <= 0:
                break
            await asyncio.sleep(min(interval, left))
            if await request.is_disconnected():  # nobody to deliver to: no access happened
                raise HTTPException(499, "client went away")
    delivered = await worker.call(
        lambda b: b.consume(recipient, purpose, from_offset, _now(request), limit, who))
    records = [d.as_json() for d in delivered]
    next_offset = delivered[-1].offset + 1 if delivered else from_offset
    return JSONResponse({"recipient": recipient, "purpose": purpose,
                         "from_offset": from_offset, "next_offset": next_offset,
                         "records": records})


@router.post("/streams/{purpose}/ack", response_model=AckResult,
             responses={**_STREAM_ERRORS,
                        400: {"model": ErrorBody, "description": "a body that is not JSON"},
                        409: {"model": ErrorBody, "description": "no record at that offset"}},
             summary="acknowledge the last offset processed (stored and audited)")
async def acknowledge(request: Request, recipient: Caller, purpose: PurposeName,
                      body: AckRequest) -> AckResult:
    who = await _own_stream(request, recipient, purpose)
    state: WebState = request.app.state.web_state
    now = _now(request)

    def ack(broker: Broker) -> int | str | None:
        records = broker.log.read_egress(recipient, purpose, body.offset)
        if not records or records[0].offset != body.offset:
            return "nothing was delivered at that offset"
        header = broker.covenant.covenant
        broker.log.append_audit([draft(
            "ack", start_ms=to_millis(now), **who.trace_fields(), recipient=recipient,
            purpose=purpose, covenant_id=header.id, covenant_version=header.version,
            egress_offset=body.offset, detail={"offset": str(body.offset),
                                               **who.detail()})], to_millis(now))
        return state.ack(recipient, purpose, body.offset, to_millis(now))

    previous = await _worker(request).call(ack)
    if isinstance(previous, str):
        raise HTTPException(409, previous)
    return AckResult(recipient=recipient, purpose=purpose, acknowledged_offset=body.offset,
                     previous_offset=previous)


@router.get("/schemas/{fingerprint}", response_model=SchemaInfo,
            responses={**_AUTH_ERRORS, 404: {"model": ErrorBody,
                                             "description": "no schema has this fingerprint"}},
            summary="the writer schema of a fingerprint (to decode a single-object value)")
async def get_schema(request: Request, recipient: Caller, fingerprint: Fingerprint
                     ) -> JSONResponse:
    # Schemas are not personal data, but this is the recipient API: one rule for every
    # route (a recipient's token) keeps the service without an anonymous surface, and the
    # `used` list tells a recipient its own streams only, not which views others receive.
    def find(broker: Broker) -> dict[str, Any] | None:
        for entry in catalog(broker.registry, broker.covenant):
            if entry.fingerprint == fingerprint.lower():
                used = [u for u in entry.used if entry.kind != "views"
                        or u.startswith(f"view of {recipient} for ")]
                return {**entry.as_json(), "used": used, "schema": entry.schema.raw,
                        "canonical_form": entry.canonical_form()}
        return None

    found = await _worker(request).call(find)
    if found is None:
        raise HTTPException(404, "no schema has this fingerprint; `covenant-broker schemas "
                            "list` shows them")
    return JSONResponse(found)
