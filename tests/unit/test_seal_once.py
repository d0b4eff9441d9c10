"""Seal once, open never in the same batch (issue 14, item 2).

The triage seals each accepted event and hands the decision of the same batch the plaintext
it sealed (`Fresh`); only events read back from the store are opened. The decision must be
the same either way: for random valid events of every shipped type (unknown fields
dropped), theme states and decision times, with a subject erased before the event came (its
new event gets a new key) or between sealing and deciding (its fields are erased), deciding
on the plaintext gives the same releases (payload bytes, sealed egress bytes, commitments,
refs, expiry) and the same audit drafts as deciding on the opened envelope.
"""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from broker.app.service import Broker
from broker.clock import from_millis, local_date
from broker.config import load_settings
from broker.crypto.key_ids import subject_of
from broker.crypto.sealing import Sealer
from broker.pipeline.decide import Decider
from broker.pipeline.port import DecisionBatch, StoredEvent
from broker.pipeline.triage import RawInput
from broker.policy.decision import DecisionContext
from tests.factories import woninginbraak
from tests.unit import strategies as gen
from tests.unit.test_policy_properties import COVENANT, control_states, decision_times


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    with tempfile.TemporaryDirectory() as tmp:
        b = Broker(load_settings(overrides={"data_dir": tmp}, environ={}))
        try:
            yield b
        finally:
            b.close()


def _comparable(batch: DecisionBatch) -> tuple[list[Any], list[Any]]:
    """A batch without what is random per decision (span ids and the traceparent made of
    them); everything else must match byte for byte."""
    def audit(draft: Any) -> dict[str, Any]:
        return {k: v for k, v in draft.items() if k != "span_id"}

    egress = [(eg.recipient, eg.purpose, eg.event_type, eg.kind, eg.payload, eg.event_offset,
               eg.ref, eg.expires_on, eg.released_ms, eg.sealed_payload, audit(eg.audit))
              for eg in batch.egress]
    return egress, [audit(d) for d in batch.audits]


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_deciding_on_the_plaintext_is_deciding_on_the_opened_envelope(
        broker: Broker, data: st.DataObject) -> None:
    now_ms = data.draw(decision_times(), "now_ms")
    now = from_millis(now_ms)
    event_type, obj = data.draw(gen.any_event(anchor_ms=now_ms), "event")
    if data.draw(st.booleans(), "unknown field"):
        obj["opmerking_intern"] = data.draw(gen.text, "its value")
    erase = data.draw(st.sampled_from(["none", "before sealing", "between"]), "erasure")
    # stored at some time up to the decision (the retention prechecks use it); triaged at
    # the decision time, so that no instant of the event lies in the triage's future
    ingested_ms = data.draw(st.integers(now_ms - 400 * gen.DAY_MS, now_ms), "ingested_ms")
    ctx = DecisionContext(now, now_ms, local_date(now, COVENANT.zone),
                          data.draw(control_states(now_ms), "control"))
    sealer: Sealer = broker.sealer
    keys = broker.data_keys
    raw = json.dumps(obj).encode()
    source = event_type.split(".", 1)[0]

    if erase == "before sealing":  # the subject erased earlier; this is a new event of it
        ok = broker.triage.accept(RawInput(source, event_type, "line 1", raw), now_ms)
        subjects = sorted(set(sealer.subjects(ok.schema, ok.record, ok.event_id).values()))
        if subjects:
            keys.destroy_subject(data.draw(st.sampled_from(subjects), "erased subject"))
    result = broker.triage.triage([RawInput(source, event_type, "line 1", raw)], now,
                                  lambda _t, _ids: set())
    assert len(result.events) == 1, result.quarantined
    triaged = result.events[0]
    fresh = triaged.fresh
    assert fresh is not None
    assert triaged.dropped_fields == (["opmerking_intern"] if "opmerking_intern" in obj else [])
    sealer.flush()
    if erase == "between":  # erased after the triage sealed it, before the decision
        sealed_subjects = sorted({subject_of(key_id) for _, key_id in fresh.sealed})
        if sealed_subjects:
            keys.destroy_subject(data.draw(st.sampled_from(sealed_subjects), "erased subject"))
    validated = copy.deepcopy(fresh.record)

    offset = data.draw(st.integers(0, 10**6), "offset")
    args = (offset, triaged.event_type, triaged.source, triaged.event_id, triaged.payload,
            triaged.trace_id, ingested_ms, triaged.traceparent)
    plain, stored = StoredEvent(*args, fresh=fresh), StoredEvent(*args)
    decider: Decider = broker.decider_at(ctx)

    reopened, opened = decider.open(plain), decider.open(stored)
    assert reopened.schema is opened.schema
    assert reopened.record == opened.record
    assert reopened.erased == opened.erased
    assert reopened.subjects == opened.subjects
    event(f"erasure {erase}: {'fields erased' if opened.erased else 'nothing erased'}")

    on_plain = decider.decide([plain], ctx, "prop")
    on_opened = decider.decide([stored], ctx, "prop")
    assert _comparable(on_plain) == _comparable(on_opened)
    event(f"{len(on_plain.egress)} released")
    assert fresh.record == validated  # the decision never changes the plaintext it was given


def test_an_ingest_decides_without_opening_what_it_sealed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded ingest decides its own events on their plaintext; what is read back
    later (a re-decision, here a replay of the store) is opened from the envelope."""
    opened: list[str] = []
    original = Sealer.open

    def counting(self: Sealer, payload: bytes, record_id_path: str | None = "event_id",
                 record_id: str | None = None) -> Any:
        opened.append(str(record_id))
        return original(self, payload, record_id_path, record_id)

    monkeypatch.setattr(Sealer, "open", counting)
    with tempfile.TemporaryDirectory() as tmp:
        b = Broker(load_settings(overrides={"data_dir": tmp}, environ={}))
        try:
            now = datetime(2026, 5, 11, 12, tzinfo=UTC)  # after the factory's instants
            lines = [(f"line {i}", json.dumps(woninginbraak()).encode()) for i in range(3)]
            report = b.ingest("politie", "woninginbraak", lines, now)
            assert report.accepted == 3
            assert report.decided.events == 3
            assert opened == []
            stored = b.log.read_store(-1, 10)
            assert [s.fresh for s in stored] == [None] * 3  # read back: nothing carried
            b.decider_at(b.context(now)).decide(stored, b.context(now), "replay")
            assert sorted(opened) == sorted(s.event_id for s in stored)
        finally:
            b.close()
