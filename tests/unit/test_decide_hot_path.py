"""The decider without egress sealing decides exactly as the durable one, and the keyed
HMACs that are set up once give the one-shot functions' values.

`Decider(seal_egress=False)` is what bench/pipeline_bench.py measures as the hot path; if it
drifted from the durable decider, the bench would measure something the broker does not do.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from broker.app.service import Broker
from broker.clock import parse_instant
from broker.keys import commitment, committer
from broker.pipeline.decide import Decider, _span_ids
from broker.policy.transforms import pseudonymise
from tests import factories as f

NOW = parse_instant("2026-05-10T12:00:00Z")
KEY = bytes(range(32))


def test_committer_gives_commitment_on_every_call() -> None:
    commit = committer(KEY)
    for data in (b"", b"x", bytes(range(256)) * 5, b"x"):
        assert commit(data) == commitment(KEY, data)
    assert committer(bytes(32))(b"x") != commit(b"x")


def test_pseudonymise_is_truncated_hmac_on_every_call() -> None:
    pseudonym = pseudonymise(KEY)
    for value in ("123456782", "999999990", "123456782"):
        expected = hmac.new(KEY, value.encode(), hashlib.sha256).hexdigest()[:32]
        assert pseudonym(value) == expected


def test_span_ids_are_distinct_64_bit_hex() -> None:
    ids = _span_ids(40)
    assert len(ids) == len(set(ids)) == 40
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids)
    assert _span_ids(0) == []


def _without_span(draft: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in draft.items() if k != "span_id"}


def test_unsealed_decider_decides_as_the_durable_one(broker: Broker) -> None:
    for event_type, events in (
        ("politie.woninginbraak", [f.woninginbraak(), f.woninginbraak()]),
        ("om.gebiedsverbod", [f.gebiedsverbod()]),
        ("gemeente.boa_waarneming", [f.boa_waarneming()]),
    ):
        report = broker.ingest(event_type.split(".", 1)[0], event_type, f.lines(*events), NOW)
        assert report.accepted == len(events)
    stored = broker.log.read_store(-1, 100)
    ctx = broker.context(NOW)
    durable = broker.decider.decide(stored, ctx, "test")
    unsealed = Decider(
        broker.plans, broker.registry, broker.keys, broker.sealer, seal_egress=False
    ).decide(stored, ctx, "test")

    assert durable.egress  # releases
    assert durable.audits  # and withholds
    assert [e.payload for e in unsealed.egress] == [e.payload for e in durable.egress]
    assert all(e.sealed_payload for e in durable.egress)
    assert all(e.sealed_payload is None for e in unsealed.egress)
    assert [_without_span(e.audit) for e in unsealed.egress] == [
        _without_span(e.audit) for e in durable.egress
    ]
    assert [_without_span(d) for d in unsealed.audits] == [_without_span(d) for d in durable.audits]
    drafts = [e.audit for e in unsealed.egress] + unsealed.audits
    assert len({d["span_id"] for d in drafts}) == len(drafts)  # a span of its own each
