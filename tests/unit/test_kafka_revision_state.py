"""The Kafka partition worker's revision state (broker/backends/kafka/revisions.py) without
a broker: which of the batch's events a correction or withdrawal sees as stored (only those
before it on its ingress topic), and which released records are live (no tombstone)."""

from __future__ import annotations

from typing import cast

from hypothesis import given
from hypothesis import strategies as st

from broker.audit.entries import Draft
from broker.backends.kafka.egress import EgressLink
from broker.backends.kafka.revisions import PartitionRevisions
from broker.backends.kafka.topics import Layout
from broker.config import load_settings
from broker.config.kafka import TopicNames
from broker.model.schemas import SchemaRegistry
from broker.pipeline.port import NewEgress, StoredEvent

SETTINGS = load_settings(overrides={"backend": "kafka"}, environ={})
REGISTRY = SchemaRegistry(SETTINGS.schemas_dir)
TOPIC = "t.ingress.om.gebiedsverbod"
OTHER = "t.ingress.politie.woninginbraak"


def _state() -> PartitionRevisions:
    layout = Layout(SETTINGS.kafka, TopicNames("t."), (), (), ())
    return PartitionRevisions(layout, 0, EgressLink(b"k" * 32),
                              REGISTRY.get("records.audit_entry"), loaded=True)


def _event(position: int, event_id: str) -> StoredEvent:
    return StoredEvent(position, "om.gebiedsverbod", "om", event_id, b"", "t", 0)


@given(offsets=st.lists(st.integers(0, 50), min_size=1, max_size=12, unique=True),
       topics=st.lists(st.booleans(), min_size=12, max_size=12),
       cutoff=st.integers(0, 51))
def test_a_revision_sees_only_the_batch_events_before_it_on_its_topic(
        offsets: list[int], topics: list[bool], cutoff: int) -> None:
    state = _state()
    ids = [f"id-{i}" for i in range(len(offsets))]
    events = [(_event(i * 3, event_id), f"{TOPIC if same else OTHER}:0:{offset}")
              for i, (event_id, offset, same) in enumerate(zip(ids, offsets, topics,
                                                               strict=False))]
    state.add_stored(events)
    state.cutoff = (TOPIC, cutoff)
    seen = state.originals_from(None, "om.gebiedsverbod", ids)  # pending: no read
    expected = {event.event_id for event, position in events
                if not position.startswith(TOPIC) or int(position.rsplit(":", 1)[1]) < cutoff}
    assert set(seen) == expected
    state.end_batch()  # committed: every one of them is stored for what comes next
    assert state.cutoff is None
    assert state.pending == {}


def _release(recipient: str, offset: int, kind: str = "record",
             ended: int | None = None) -> tuple[NewEgress, int]:
    eg = NewEgress(recipient, "handhaving-gebiedsverbod", "om.gebiedsverbod", kind, b"", 7,
                   "ref", None, 0, cast(Draft, {}), tombstone_for=ended)
    return eg, offset


def test_live_records_leave_out_those_a_tombstone_ends() -> None:
    state = _state()
    state.add_released([_release("boa-hor-noord", 0), _release("boa-hor-oost", 0),
                        _release("boa-hor-noord", 2, "tombstone", ended=0),
                        _release("boa-hor-noord", 3)])
    live = state.live_records(None, 7)  # all written by this worker: no read
    assert [(r.recipient, r.offset) for r in live] == [("boa-hor-noord", 3),
                                                       ("boa-hor-oost", 0)]
    state.tombstoned.add(("boa-hor-oost", "handhaving-gebiedsverbod", 0))  # an expiry
    assert [(r.recipient, r.offset) for r in state.live_records(None, 7)] == [
        ("boa-hor-noord", 3)]
