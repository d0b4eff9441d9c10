"""The audit topic's batch records without Kafka: the codec, the split by size, and the
reading of a partition's records (offset order) into a verified chain, with every way a
record can be altered found and named by its offset; and the integrator resuming inside a
batch record after a pass that stopped between rounds."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.audit.chain import verify_chain
from broker.audit.checkpoint import CheckpointSigner
from broker.audit.entries import GENESIS, chain_hash, draft, seal
from broker.audit.integrate import ChainPosition, SourceCheck
from broker.audit.sequencer import AuditSequencer
from broker.audit.sqlite_integrated import IntegratedAuditDb
from broker.backends.kafka.audit_batch import (
    AuditBatch,
    batch_schema,
    decode_batch,
    encode_batch,
    encoded_size,
    entries_of,
    last_entry,
    read_partition,
    split,
)
from broker.backends.kafka.audit_integrator import chain_read, integrate
from broker.config import load_settings
from broker.errors import AuditIntegrityError
from broker.model import codec
from broker.model.schemas import Schema, SchemaRegistry

REGISTRY = SchemaRegistry(load_settings(environ={}).schemas_dir)
SCHEMA: Schema = REGISTRY.get("records.audit_entry")
BATCH: Schema = REGISTRY.get("records.audit_batch")
FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@dataclass
class Rec:
    """A committed record as kafka-python hands it over (the fields the readers use)."""

    offset: int
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def entries(count: int, tag: str = "") -> list[bytes]:
    out, prev = [], GENESIS
    for seq in range(count):
        entry = draft("decide", trace_id=None, start_ms=1_000 + seq, recipient="r",
                      purpose="p", decision="release", event_id=f"{tag}e-{seq}",
                      detail={"n": str(seq)})
        sealed = seal(SCHEMA, entry, seq, prev, 5_000 + seq)
        out.append(sealed.data)
        prev = sealed.entry_hash
    return out


def record(offset: int, batch: AuditBatch) -> Rec:
    return Rec(offset, encode_batch(BATCH, batch), batch.headers())


def records(data: list[bytes], sizes: list[int]) -> list[Rec]:
    """The entries in batches of `sizes`, at offsets 0, 2, 4, ... (a commit marker after
    each transaction's record)."""
    out, at = [], 0
    for i, size in enumerate(sizes):
        out.append(record(2 * i, AuditBatch(at, data[at:at + size])))
        at += size
    assert at == len(data)
    return out


def test_the_batch_schema_is_the_registrys() -> None:
    assert batch_schema(SCHEMA).fingerprint == BATCH.fingerprint


@FAST
@given(st.integers(-2**63, 2**63 - 1), st.lists(st.binary(max_size=300), min_size=1, max_size=20))
def test_a_batch_decodes_to_what_was_encoded(first_seq: int, items: list[bytes]) -> None:
    batch = AuditBatch(first_seq, items)
    data = encode_batch(BATCH, batch)
    assert data == codec.encode(BATCH.parsed, BATCH.fingerprint,  # fastavro's bytes
                                {"first_seq": first_seq, "entries": items})
    assert decode_batch(BATCH, data) == batch
    assert len(data) <= encoded_size(items)
    assert batch.headers() == [("seq", str(first_seq).encode()),
                               ("count", str(len(items)).encode())]


def test_an_empty_batch_or_another_record_does_not_decode() -> None:
    empty = encode_batch(BATCH, AuditBatch(0, []))
    assert empty == codec.encode(BATCH.parsed, BATCH.fingerprint,
                                 {"first_seq": 0, "entries": []})
    with pytest.raises(ValueError, match="no entries"):
        decode_batch(BATCH, encode_batch(BATCH, AuditBatch(0, [])))
    with pytest.raises(ValueError, match=r"not a single-object encoded records\.audit_batch"):
        decode_batch(BATCH, entries(1)[0])  # an entry as written before batches


@FAST
@given(st.lists(st.integers(0, 900), min_size=0, max_size=60), st.integers(1_000, 4_000))
def test_split_keeps_the_order_and_every_batch_fits(sizes: list[int], limit: int) -> None:
    items = [bytes([i % 256]) * n for i, n in enumerate(sizes)]
    batches = split(7, items, limit)
    assert [e for b in batches for e in b.entries] == items
    at = 7
    for batch in batches:
        assert batch.first_seq == at
        assert batch.entries
        assert len(encode_batch(BATCH, batch)) <= limit
        at += len(batch.entries)
    # as few as fit: no two neighbours would have fitted in one
    for one, two in itertools.pairwise(batches):
        assert encoded_size(one.entries + two.entries[:1]) > limit


def test_split_refuses_an_entry_larger_than_a_record() -> None:
    with pytest.raises(AuditIntegrityError, match="entry 3 is 2000 bytes"):
        split(3, [b"x" * 2000], 1_000)


def test_an_intact_partition_reads_as_its_chain() -> None:
    data = entries(9)
    read = read_partition(SCHEMA, records(data, [4, 1, 3, 1]))
    assert read.report.ok, read.report.problem
    assert read.report == verify_chain(SCHEMA, enumerate(data))
    assert read.data == data
    assert read.offsets == [0] * 4 + [2] + [4] * 3 + [6]
    assert entries_of(SCHEMA, records(data, [4, 5]), 0) == data


def _rebatched(recs: list[Rec], index: int, change: Any) -> list[Rec]:
    """Record `index` re-encoded with `change(entries)` and consistent headers: what a
    writer to the topic who knows the format would do."""
    batch = decode_batch(BATCH, recs[index].value)
    altered = AuditBatch(batch.first_seq, change(list(batch.entries)))
    out = list(recs)
    out[index] = record(recs[index].offset, altered)
    return out


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


TAMPERS: dict[str, Any] = {
    "bit flip in an entry's prev_hash": lambda r: _rebatched(
        r, 1, lambda e: [e[0], _flip(e[1], 40), *e[2:]]),
    "bit flip in an entry's fields": lambda r: _rebatched(
        r, 1, lambda e: [_flip(e[0], len(e[0]) - 3), *e[1:]]),
    "an entry removed from a batch": lambda r: _rebatched(r, 1, lambda e: [e[0], *e[2:]]),
    "an entry inserted into a batch": lambda r: _rebatched(
        r, 1, lambda e: [e[0], e[0], *e[1:]]),
    "entries reordered within a batch": lambda r: _rebatched(
        r, 1, lambda e: [e[1], e[0], *e[2:]]),
    "the last entry of a batch removed": lambda r: _rebatched(r, 1, lambda e: e[:-1]),
    "a batch dropped": lambda r: [r[0], *r[2:]],
    "a batch duplicated": lambda r: [r[0], r[1], replace(r[1], offset=3), *r[2:]],
    "batches swapped": lambda r: [r[0], r[2], r[1], *r[3:]],
    "a batch whose first_seq lies": lambda r: [r[0], record(r[1].offset, AuditBatch(
        decode_batch(BATCH, r[1].value).first_seq + 1,
        decode_batch(BATCH, r[1].value).entries)), *r[2:]],
    "headers that lie": lambda r: [r[0], replace(r[1], headers=[("seq", b"4"),
                                                                 ("count", b"9")]), *r[2:]],
    "a record that is not a batch": lambda r: [r[0], Rec(r[1].offset, entries(1)[0]),
                                               *r[2:]],
    "an empty batch inserted": lambda r: [r[0], record(1, AuditBatch(4, [])), *r[1:]],
}


@pytest.mark.parametrize("how", sorted(TAMPERS))
def test_every_alteration_of_the_records_is_found_at_its_offset(how: str) -> None:
    data = entries(10)
    intact = records(data, [4, 3, 3])
    read = read_partition(SCHEMA, TAMPERS[how](intact))
    assert not read.report.ok, how
    assert read.report.problem is not None
    assert read.report.problem.startswith("record at offset "), read.report.problem
    offset = int(read.report.problem.split()[3].rstrip(":"))
    assert offset in {r.offset for r in TAMPERS[how](intact)}
    assert read.report.entries <= 10


def test_the_problem_says_what_is_wrong() -> None:
    data = entries(10)
    intact = records(data, [4, 3, 3])
    dropped = read_partition(SCHEMA, TAMPERS["a batch dropped"](intact)).report.problem
    assert dropped == ("record at offset 4: the batch starts at entry 7, but entry 4 is "
                       "next: entries 4..6 are missing (a batch was dropped?)")
    twice = read_partition(SCHEMA, TAMPERS["a batch duplicated"](intact)).report.problem
    assert twice is not None
    assert twice.startswith("record at offset 3:")
    assert "duplicated" in twice
    removed = read_partition(SCHEMA, TAMPERS["an entry removed from a batch"](intact))
    assert removed.report.problem == ("record at offset 2: entry 5: carries seq 6; entries "
                                      "were reordered, inserted or duplicated")
    not_batch = read_partition(SCHEMA, TAMPERS["a record that is not a batch"](intact))
    assert not_batch.report.problem == ("record at offset 2: does not decode as an audit "
                                        "batch (ValueError)")


MUTATIONS = st.sampled_from(["flip", "delete", "insert", "truncate"])


@FAST
@given(st.lists(st.integers(1, 4), min_size=1, max_size=5), st.data())
def test_a_mutated_batch_is_refused_or_changes_nothing_the_chain_holds(
        sizes: list[int], data: st.DataObject) -> None:
    """Any change to the bytes of one record: it does not decode, or its entries fail the
    chain check, or the chain reads back with other entries only where nothing follows
    them (the last entry's bytes), which moves the head a checkpoint or an integrated
    position holds: so the head differs. Otherwise the entries are exactly the original
    ones (Avro has more than one encoding of an array; the entries are what is hashed)."""
    chain = entries(sum(sizes))
    intact = records(chain, sizes)
    head = verify_chain(SCHEMA, enumerate(chain)).head
    index = data.draw(st.integers(0, len(intact) - 1))
    value = intact[index].value
    how = data.draw(MUTATIONS)
    at = data.draw(st.integers(0, len(value) - 1))
    if how == "flip":
        mutated = _flip(value, at) if data.draw(st.booleans()) else \
            value[:at] + bytes([data.draw(st.integers(0, 255))]) + value[at + 1:]
    elif how == "delete":
        mutated = value[:at] + value[at + 1:]
    elif how == "insert":
        mutated = value[:at] + bytes([data.draw(st.integers(0, 255))]) + value[at:]
    else:
        mutated = value[:at]
    if mutated == value:
        return
    tampered = list(intact)
    tampered[index] = replace(intact[index], value=mutated)
    read = read_partition(SCHEMA, tampered)
    assert not read.report.ok or read.data == chain or read.report.head != head


def test_last_entry_is_the_head_a_writer_extends() -> None:
    data = entries(5)
    recs = records(data, [3, 2])
    assert last_entry(SCHEMA, recs[-1], 0) == (4, data[4])
    with pytest.raises(AuditIntegrityError, match=r"partition 0: the last record \(offset "
                                                  r"2\) does not decode as an audit batch"):
        last_entry(SCHEMA, Rec(2, data[4]), 0)
    with pytest.raises(AuditIntegrityError, match="its last entry carries seq 4, the batch "
                                                  "says 5"):
        last_entry(SCHEMA, record(2, AuditBatch(4, data[3:5])), 0)
    with pytest.raises(AuditIntegrityError, match="headers"):
        last_entry(SCHEMA, replace(recs[-1], headers=[]), 0)


def test_a_resumed_read_skips_what_the_position_counts_inside_its_record() -> None:
    data = entries(10)
    recs = records(data, [4, 3, 3])
    # position after entry 5 (inside the record at offset 2, entries 4..6)
    pos = ChainPosition(0, 5, verify_chain(SCHEMA, enumerate(data[:5])).head, 2)
    read = read_partition(SCHEMA, [r for r in recs if r.offset >= 2], count=5,
                          head=pos.head, resume=True)
    assert read.report.ok, read.report.problem
    assert read.data == data[5:]
    assert read.report.head == verify_chain(SCHEMA, enumerate(data)).head
    # a stale hint (from the start) skips whole records the same way
    assert read_partition(SCHEMA, recs, count=5, head=pos.head, resume=True).data == data[5:]
    # the skipped entry before the position must be the one that was read before
    other = entries(10, tag="other")
    forged = records(other, [4, 3, 3])
    bad = read_partition(SCHEMA, forged[1:], count=5, head=pos.head, resume=True)
    assert bad.report.problem == ("record at offset 2: entry 4 is not the entry that was "
                                  "read before (its chain hash differs)")
    # without resume, the same read is a batch starting before the chain's position
    strict = read_partition(SCHEMA, recs[1:], count=5, head=pos.head)
    assert strict.report.problem is not None
    assert "already holds 5" in strict.report.problem
    assert chain_hash(data[4]) == pos.head


class _CrashAfter(IntegratedAuditDb):
    rounds = 1

    def append(self, batch: Any) -> int:
        self.rounds -= 1
        if self.rounds < 0:
            raise KeyboardInterrupt
        return super().append(batch)


def test_integrate_stops_inside_a_record_then_resumes_there(tmp_path: Path) -> None:
    """A pass that stopped between rounds stored a position inside a batch record; the
    next pass reads from that record, skips what was integrated, and the integrated log
    holds every entry once, in chain order; then more batches, and a third pass."""
    signer = CheckpointSigner(Ed25519PrivateKey.generate(), "covenant-broker/test-batch")
    sequencer = AuditSequencer(SCHEMA, origin="covenant-broker/test-batch", signer=signer)
    data = entries(12)
    recs = records(data[:7], [5, 2])

    def read(store: IntegratedAuditDb, recs: list[Rec]) -> dict[int, Any]:
        pos = store.positions(1)[0]
        ahead = [r for r in recs if r.offset >= pos.next_offset]
        return {0: chain_read(SCHEMA, pos, ahead, recs[-1].offset + 2)}

    crashing = _CrashAfter(tmp_path, sequencer)
    crashing.lock_writer()
    try:
        with pytest.raises(KeyboardInterrupt):
            integrate(crashing, SCHEMA, read(crashing, recs), batch=3)
        stopped = crashing.positions(1)[0]
    finally:
        crashing.close()
    assert (stopped.entries, stopped.next_offset) == (3, 0)  # inside the first record

    store = IntegratedAuditDb(tmp_path, sequencer)
    store.lock_writer()
    try:
        assert integrate(store, SCHEMA, read(store, recs), batch=3)[0] == 4
        assert store.positions(1)[0].next_offset == 4  # the end of that read
        more = records(data, [5, 2, 4, 1])
        assert integrate(store, SCHEMA, read(store, more), batch=3)[0] == 5
        assert integrate(store, SCHEMA, read(store, more), batch=3)[0] == 0
        check = SourceCheck(SCHEMA, {0: data})
        assert all(check.check(s, d) is None for s, d in store.audit.audit_entries())
        assert check.integrated == {0: 12}
    finally:
        store.close()
