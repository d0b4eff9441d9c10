"""Issue 14, item 4: the hot path's shortcuts write what the plain code wrote.

Each faster path is compared with the code it replaced, on hypothesis input that includes
what the shortcut must hand back to the plain path (wrong types, non-ASCII chain hashes,
missing fields, long strings, instants out of range):

* `entries.entry_writer` (the entry's header written without copying the draft) against
  `Schema.encode` of the copied draft, as `entries.seal` did;
* `AuditSequencer.seal` against sealing entry by entry with the tree frontier (the
  subject keys made once per shared data_subjects list);
* `trace.stream_tracer` against `trace.stream_trace_id`;
* `ingest._within_limits` against `ingest._check_strings`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.audit import trace
from broker.audit.entries import GENESIS, Draft, draft, entry_writer, seal
from broker.audit.sequencer import AuditSequencer, IndexRow, subject_keys
from broker.audit.tree import Frontier
from broker.errors import InvalidEvent
from broker.model.schemas import Schema
from broker.pipeline import ingest
from tests.unit.strategies import REGISTRY

SCHEMA: Schema = REGISTRY.get("records.audit_entry")
hexes = st.text("0123456789abcdef", min_size=32, max_size=32)
words = st.text(max_size=12)
odd = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(),
                st.binary(max_size=3), st.just([]), st.just({}))
subjects = st.lists(st.fixed_dictionaries({"pseudonym": hexes, "id_type": words,
                                           "role": words}), max_size=3)


def _plain(entry: Draft, seq: Any, prev_hash: Any, logged_ms: Any) -> bytes:
    """What `entries.seal` encoded before the entry writer: the copied draft."""
    record = dict(entry)
    record["seq"] = seq
    record["prev_hash"] = prev_hash
    record["logged_at"] = logged_ms
    return SCHEMA.encode(record)


def _outcome(f: Any, *args: Any) -> bytes | type[BaseException]:
    try:
        return cast(bytes, f(*args))
    except Exception as exc:  # noqa: BLE001 - the exception type is the expectation
        return type(exc)


@st.composite
def drafts(draw: st.DrawFn) -> Draft:
    fields: dict[str, Any] = {
        "purpose": draw(st.one_of(st.none(), words)), "recipient": draw(words),
        "decision": draw(st.sampled_from([None, "release", "withhold"])),
        "reason": draw(st.one_of(st.none(), words)),
        "data_subjects": draw(subjects), "fields_released": draw(st.lists(words, max_size=3)),
        "event_offset": draw(st.one_of(st.none(), st.integers(0, 2**40))),
        "egress_offset": draw(st.one_of(st.none(), st.integers(0, 2**40))),
        "delivered_commitment": draw(st.one_of(st.none(), hexes)),
        "detail": draw(st.dictionaries(words, words, max_size=2)),
        "covenant_version": draw(st.one_of(st.none(), st.integers(0, 9)))}
    out = dict(draft("decide", trace_id=draw(hexes), start_ms=draw(st.integers(0, 2**42)),
                     **fields))
    if draw(st.integers(0, 5)) == 0:  # now and then a value outside the fast path
        out[draw(st.sampled_from(sorted(out)))] = draw(odd)
    if draw(st.integers(0, 9)) == 0:
        out.pop(draw(st.sampled_from(sorted(out))))
    return cast(Draft, out)


heads = st.tuples(
    st.one_of(st.integers(0, 2**63 - 1), st.integers(-5, -1), st.just(2**63), odd),
    st.one_of(hexes.map(lambda h: h * 2), st.text(max_size=70), st.just("é" * 64), odd),
    st.one_of(st.integers(-(2**63), 2**63 - 1), st.just(2**63), odd))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entry=drafts(), head=heads)
def test_the_entry_writer_writes_the_bytes_of_the_copied_draft(
        entry: Draft, head: tuple[Any, Any, Any]) -> None:
    write = entry_writer(SCHEMA)
    assert _outcome(write, entry, *head) == _outcome(_plain, entry, *head)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(st.tuples(subjects, st.integers(1, 4)), min_size=1, max_size=6),
       start=st.integers(0, 40))
def test_the_sequencer_seals_as_entry_by_entry_sealing_did(
        events: list[tuple[list[dict[str, str]], int]], start: int) -> None:
    # one data_subjects list shared by every decision on an event, as the decider makes them
    batch = [draft("decide", trace_id="ab" * 16, start_ms=5, data_subjects=people,
                   purpose=f"p{i}", recipient="r", decision="withhold", event_offset=n)
             for n, (people, plans) in enumerate(events) for i in range(plans)]
    frontier = Frontier()
    for i in range(start):
        frontier.push(bytes([i]) * 32)
    reference = frontier.copy()
    sequencer = AuditSequencer(SCHEMA, origin="test", clock=lambda: 7)
    sealed = sequencer.seal(start, GENESIS, frontier, batch)
    prev = GENESIS
    for n, (entry, got) in enumerate(zip(batch, sealed, strict=True)):
        want = seal(SCHEMA, entry, start + n, prev, 7)
        assert (got.seq, got.data, got.entry_hash) == (want.seq, want.data, want.entry_hash)
        assert got.nodes == reference.push(want.leaf)
        assert got.index == IndexRow(start + n, "decide", "r", f"p{entry['purpose'][1:]}",
                                     "withhold", None, 5)
        assert got.subjects == subject_keys(entry)
        prev = want.entry_hash
    assert frontier.root() == reference.root()


@given(key=st.binary(min_size=1, max_size=40), trace_id=st.text(), recipient=st.text(),
       purpose=st.text())
def test_the_stream_tracer_is_stream_trace_id(key: bytes, trace_id: str, recipient: str,
                                              purpose: str) -> None:
    assert trace.stream_tracer(key)(trace_id, recipient, purpose) == \
        trace.stream_trace_id(key, trace_id, recipient, purpose)


_LIMIT = 16
instants = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                        timezones=st.just(UTC)).map(lambda d: d + timedelta(0))
leaves = st.one_of(st.none(), st.integers(), st.text(max_size=20),
                   st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
                           max_size=8),
                   st.text(st.characters(min_codepoint=0x10000), max_size=6), instants)
nested = st.recursive(leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)),
    max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(value=nested)
def test_the_quick_limit_check_agrees_with_the_worded_one(value: Any) -> None:
    try:
        ingest._check_strings(value, "", _LIMIT)
    except InvalidEvent:
        passes = False
    else:
        passes = True
    assert ingest._within_limits(value, _LIMIT) is passes
