"""The covenant over time: four-eyes activation, key rotation, replay and policy impact.

All of it is event-sourced on the control log: an activation stores the covenant text by
its SHA-256 with the approvers, a rotation the new key version, each with an audit entry.
Replay and diff read the store and publish nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from broker.app.service import Broker, Delivered
from broker.audit.entries import draft
from broker.clock import from_millis, now_utc, to_millis
from broker.errors import BrokerError, CovenantError, PolicyError
from broker.model.render import to_json
from broker.pipeline import corrections
from broker.pipeline.decide import Decider
from broker.pipeline.port import StoredEvent, StoredRevision
from broker.policy.control import ControlEvent
from broker.policy.covenant import Covenant, load_covenant
from broker.policy.decision import Release
from broker.policy.lint import lint
from broker.policy.plan import compile_plans

MIN_APPROVERS = 2


def _revisions(broker: Broker) -> Iterator[StoredRevision]:
    log = broker.backend.revision_reader
    after = -1
    while log is not None:
        batch = log.read_revisions(after, broker.settings.decide_batch_size)
        if not batch:
            return
        yield from batch
        after = batch[-1].seq


def _timeline(broker: Broker) -> Iterator[StoredEvent | StoredRevision]:
    """Stored events and revisions (corrections, withdrawals) in the order they came: a
    revision after the store offset that was the last when it was stored."""
    revisions = _revisions(broker)
    pending = next(revisions, None)
    for stored in _stored_events(broker):
        while pending is not None and pending.after_store_offset < stored.offset:
            yield pending
            pending = next(revisions, None)
        yield stored
    while pending is not None:
        yield pending
        pending = next(revisions, None)


def _stored_events(broker: Broker, since_ms: int | None = None) -> Iterator[StoredEvent]:
    after = -1
    while True:
        batch = broker.log.read_store(after, broker.settings.decide_batch_size)
        if not batch:
            return
        for stored in batch:
            if since_ms is None or stored.ingested_ms >= since_ms:
                yield stored
        after = batch[-1].offset


# -- four eyes ------------------------------------------------------------------------------

def activate(broker: Broker, path: Path, approvers: list[str], now: datetime) -> int:
    """Make the covenant in `path` the active version from `now`; returns its version."""
    distinct = sorted({a.strip() for a in approvers if a.strip()}, key=str.casefold)
    if len({a.casefold() for a in distinct}) < MIN_APPROVERS:
        raise PolicyError(f"four eyes: activation needs at least {MIN_APPROVERS} distinct "
                          f"approvers, got {len(distinct)}")
    problems = lint(path, broker.settings.schemas_dir)
    if problems:
        raise CovenantError(str(path), problems)
    covenant = load_covenant(path)
    text = path.read_bytes()
    with broker.exclusive():  # the checks below and the write, one activation at a time
        return _activate(broker, covenant, text, path, distinct, now)


def _activate(broker: Broker, covenant: Covenant, text: bytes, path: Path,
              distinct: list[str], now: datetime) -> int:
    sha = hashlib.sha256(text).hexdigest()
    header = covenant.covenant
    if header.id != broker.covenant.covenant.id:
        raise PolicyError(f"{path}: covenant id {header.id!r} is not the running covenant "
                          f"{broker.covenant.covenant.id!r}")
    control = broker.control_state()
    for earlier in control.activations:
        if earlier.version == header.version and earlier.sha256 != sha:
            raise PolicyError(f"{path}: version {header.version} was activated before with "
                              "other content; give the amendment a new version number")
    active = control.covenant_at(to_millis(now))
    active_version, active_sha = ((active.version, active.sha256) if active else
                                  (broker.covenant.covenant.version, broker.policy_sha))
    if header.version < active_version or (header.version == active_version
                                           and sha != active_sha):
        raise PolicyError(f"{path}: version {header.version} is not newer than the active "
                          f"version {active_version}")
    now_ms = to_millis(now)
    value = json.dumps({"version": header.version, "sha256": sha, "approvers": distinct})
    audit = draft("control", trace_id=None, start_ms=now_ms, covenant_id=header.id,
                  covenant_version=header.version,
                  detail={"kind": "covenant_activation", "sha256": sha,
                          "approvers": ", ".join(distinct)})
    broker.log.append_control(ControlEvent("covenant", header.id, value, now_ms, now_ms),
                              audit, document=text)
    return header.version


def rotate_key(broker: Broker, purpose: str, now: datetime) -> int:
    """Start a new pseudonymisation key version for one purpose from `now`."""
    if purpose not in broker.covenant.purposes:
        raise PolicyError(f"unknown purpose {purpose!r}")
    with broker.exclusive():  # two rotations at once would both take the next version
        return _rotate_key(broker, purpose, now)


def _rotate_key(broker: Broker, purpose: str, now: datetime) -> int:
    version = broker.control_state().latest_key_version(purpose) + 1
    now_ms = to_millis(now)
    broker.keys.pseudonym_key(purpose, version)  # created now, mode 0600
    audit = draft("control", trace_id=None, start_ms=now_ms, purpose=purpose,
                  covenant_id=broker.covenant.covenant.id,
                  covenant_version=broker.covenant.covenant.version,
                  detail={"kind": "key_rotation", "key_version": str(version)})
    broker.log.append_control(ControlEvent("key_rotation", purpose, str(version), now_ms,
                                           now_ms), audit)
    return version


# -- replay ---------------------------------------------------------------------------------

@dataclass
class Replayed:
    records: list[Delivered] = field(default_factory=list)
    view_bytes: list[bytes] = field(default_factory=list)

    @property
    def digest(self) -> str:
        return hashlib.sha256(b"".join(self.view_bytes)).hexdigest()


@dataclass(frozen=True)
class ReplaySummary:
    count: int
    digest: str  # sha256 of the concatenated view bytes, as `Replayed.digest`


def replay(broker: Broker, recipient: str, purpose: str | None, version: int,
           now: datetime | None) -> Replayed:
    """Rebuild a recipient's stream from the store under one covenant version.

    Each event is decided at its own ingest time (or at `now` when given), under the
    control state of that time; corrections and withdrawals are applied in their order,
    as when they came: a retraction (tombstone) of the record the stream holds for the
    event, and for a correction the corrected event decided afresh. Same store, version
    and keys: the same bytes. Holds the whole stream in memory; `replay_into` streams it
    instead.
    """
    out = Replayed()

    def keep(record: Delivered, view: bytes) -> None:
        out.records.append(record)
        out.view_bytes.append(view)

    replay_into(broker, recipient, purpose, version, now, keep)
    return out


def replay_into(broker: Broker, recipient: str, purpose: str | None, version: int,
                now: datetime | None, emit: Callable[[Delivered, bytes], None]
                ) -> ReplaySummary:
    """`replay`, handing each record and its view bytes to `emit` as it is rebuilt, so
    memory stays flat however long the store is. Audited as `replay` is, once, at the end."""
    broker.check_recipient(recipient, purpose)
    control = broker.control_state()
    offsets: dict[str, int] = {}
    digest = hashlib.sha256()
    committed = hmac.new(broker.keys.commitment_key(), digestmod=hashlib.sha256)
    count = 0
    decider: Decider | None = None
    decided_at: int | None = None
    live: dict[tuple[str, int], tuple[int, str | None]] = {}  # (purpose, event) -> record
    tombstone_schema = broker.registry.get("records.tombstone")

    def put(plan_purpose: str, event_type: str, kind: str, value: dict[str, Any],
            view: bytes) -> int:
        nonlocal count
        offset = offsets.get(plan_purpose, 0)
        offsets[plan_purpose] = offset + 1
        digest.update(view)
        committed.update(view)
        count += 1
        emit(Delivered(offset, event_type, plan_purpose, recipient, kind, to_json(value)), view)
        return offset

    for item in _timeline(broker):
        ctx = broker.context(now or from_millis(item.ingested_ms), control)
        if decider is None or ctx.now_ms != decided_at:  # one look-up per ingest batch
            decider, decided_at = broker.decider_at(ctx, version), ctx.now_ms
        plans = [p for p in decider.plans.plans_for(item.event_type)
                 if p.recipient == recipient and (purpose is None or p.purpose == purpose)]
        if not plans:
            continue
        if isinstance(item, StoredRevision):
            # the original by the store position the revision names (on Kafka one read)
            stored = broker.log.read_store(item.original_offset - 1, 1)[0]
            for plan in plans:  # the retraction of what the stream holds for the event
                held = live.pop((plan.purpose, stored.offset), None)
                if held is not None:
                    cause = corrections.CAUSE[item.action]
                    value = {"ref": held[1], "expired": True, "expired_after": ctx.today,
                             "released_offset": held[0], "cause": cause,
                             "reason": corrections.RETRACT_REASON[item.action]}
                    put(plan.purpose, item.event_type, "tombstone", value,
                        tombstone_schema.encode(value))
            if item.action != corrections.CORRECTION:
                continue
            stored = corrections.as_stored(item, stored)
        else:
            stored = item
        opened = decider.open(stored)
        for plan in plans:
            decision = decider.decide_one(plan, stored, opened, ctx)
            if not isinstance(decision, Release):
                continue
            ref = decision.view.get("ref")
            offset = put(plan.purpose, stored.event_type, "record", decision.view,
                         plan.view_schema.encode(decision.view))
            live[(plan.purpose, stored.offset)] = (offset, ref if isinstance(ref, str)
                                                   else None)
    summary = ReplaySummary(count, digest.hexdigest())
    now_ms = to_millis(now or now_utc())
    broker.log.append_audit([draft(
        "replay", trace_id=None, start_ms=now_ms, recipient=recipient, purpose=purpose,
        covenant_id=broker.covenant.covenant.id, covenant_version=version,
        delivered_commitment=committed.hexdigest(),
        detail={"count": str(count), "digest": summary.digest})], now_ms)
    return summary


# -- policy impact --------------------------------------------------------------------------

@dataclass
class StreamImpact:
    recipient: str
    purpose: str
    newly_released: int = 0
    no_longer_released: int = 0
    changed_values: int = 0
    fields_added: set[str] = field(default_factory=set)
    fields_removed: set[str] = field(default_factory=set)

    def as_json(self) -> dict[str, object]:
        return {"recipient": self.recipient, "purpose": self.purpose,
                "newly_released": self.newly_released,
                "no_longer_released": self.no_longer_released,
                "changed_values": self.changed_values,
                "fields_added": sorted(self.fields_added),
                "fields_removed": sorted(self.fields_removed)}


class ImpactTimeoutError(BrokerError):
    """A policy impact run passed its deadline; it stopped, nothing was published."""


def policy_diff(broker: Broker, current: Path, proposed: Path,
                since: datetime | None, deadline: float | None = None
                ) -> tuple[int, list[StreamImpact]]:
    """Dry run of two covenants over the stored history: what would flow differently.

    Returns (events examined, impact per stream that differs). Nothing is published.
    `deadline` (a time.monotonic() value) stops the run with ImpactTimeoutError: the console
    runs it on the broker's one worker thread, which must not stay busy indefinitely.
    """
    deciders = []
    for path in (current, proposed):
        plans = compile_plans(load_covenant(path), broker.registry, broker.keys.pseudonym_key,
                              str(path), derive_views=True)
        deciders.append(Decider(plans, broker.registry, broker.keys, broker.sealer))
    before, after = deciders
    control = broker.control_state()
    impact: dict[tuple[str, str], StreamImpact] = {}
    examined = 0
    for stored in _stored_events(broker, to_millis(since) if since else None):
        if deadline is not None and time.monotonic() > deadline:
            raise ImpactTimeoutError(f"the impact run stopped after {examined} events: it took "
                                f"longer than allowed; choose a later 'since'")
        examined += 1
        ctx = broker.context(from_millis(stored.ingested_ms), control)
        opened = before.open(stored)
        old = {(p.recipient, p.purpose): before.decide_one(p, stored, opened, ctx)
               for p in before.plans.plans_for(stored.event_type)}
        new = {(p.recipient, p.purpose): after.decide_one(p, stored, opened, ctx)
               for p in after.plans.plans_for(stored.event_type)}
        for key in old.keys() | new.keys():
            a, b = old.get(key), new.get(key)
            a_view = a.view if isinstance(a, Release) else None
            b_view = b.view if isinstance(b, Release) else None
            if a_view is None and b_view is None:
                continue
            stream = impact.setdefault(key, StreamImpact(*key))
            if a_view is None:
                stream.newly_released += 1
            elif b_view is None:
                stream.no_longer_released += 1
            else:
                stream.fields_added |= set(b_view) - set(a_view)
                stream.fields_removed |= set(a_view) - set(b_view)
                if any(a_view.get(k) != b_view.get(k) for k in set(a_view) & set(b_view)):
                    stream.changed_values += 1
    changed = [s for s in impact.values() if s.newly_released or s.no_longer_released
               or s.changed_values or s.fields_added or s.fields_removed]
    return examined, sorted(changed, key=lambda s: (s.recipient, s.purpose))
