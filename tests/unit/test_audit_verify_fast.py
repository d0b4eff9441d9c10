"""The fast path of `audit verify` (`verify_bulk`): what it computes without a loop per entry
equals what the sequencer stored, and it sees every single-byte change where the exact
walk does.

Random logs are built through the real sequencer and SQLite backend (test_audit_mutations).
Chunks of 2 and 4 entries (instead of 65536) make a log span many chunks; one setting runs
the chunks in two worker processes.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.audit import verify_bulk
from broker.audit.entries import Draft, chain_hash
from broker.audit.merkle import leaf_hash
from broker.audit.sequencer import AuditSequencer
from broker.audit.tree import Frontier
from broker.audit.verify import AuditReport, verify_log
from broker.backends.embedded.event_log import SqliteEventLog
from broker.model.avro_writer import zigzag
from broker.model.codec import MARKER
from tests.unit.test_audit_mutations import (
    FAST,
    ORIGIN,
    SCHEMA,
    TMP,
    VERIFIER,
    batches,
    build,
    tamper,
)

HEADER = MARKER + SCHEMA.fingerprint
WITH_FIXTURE = settings(FAST, max_examples=60,
                        suppress_health_check=[*FAST.suppress_health_check,
                                               HealthCheck.function_scoped_fixture])


@pytest.fixture(params=[(1, 1), (2, 1), (2, 2)], ids=["chunk2", "chunk4", "chunk4-2procs"])
def small_chunks(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    level, processes = request.param
    monkeypatch.setattr(verify_bulk, "CHUNK_LEVEL", level)
    monkeypatch.setattr(verify_bulk, "workers", lambda: processes)


def fast_and_exact(path: Path) -> tuple[verify_bulk.BulkOutcome | None, AuditReport]:
    log = SqliteEventLog(path, SCHEMA, AuditSequencer(SCHEMA, origin=ORIGIN))
    try:
        reader = log.audit.chunk_reader()
        assert reader is not None
        due = [cp.size for cp in log.audit.checkpoints()]
        outcome = verify_bulk.bulk_walk(reader, HEADER, log.audit.audit_size(), due,
                                        chunk_level=verify_bulk.CHUNK_LEVEL)
        return outcome, verify_log(log.audit, SCHEMA, VERIFIER, ORIGIN, bulk=False)
    finally:
        log.close()


def entry_named(problem: str | None) -> int:
    found = re.match(r"entry (\d+): ", problem or "")
    assert found, problem
    return int(found.group(1))


@given(st.integers(0, 200_000), st.integers(0, 300))
def test_seq_prefixes_are_the_avro_longs(first: int, count: int) -> None:
    assert verify_bulk.seq_prefixes(HEADER, first, count) == [
        HEADER + zigzag(seq) + b"\x80\x01" for seq in range(first, first + count)]


@given(st.lists(st.binary(min_size=1, max_size=40), max_size=300))
def test_the_levels_in_stored_order_are_the_nodes_the_frontier_stores(
        entries: list[bytes]) -> None:
    frontier = Frontier()
    stored = b"".join(node.hash for data in entries for node in frontier.push(leaf_hash(data)))
    leaves = verify_bulk.leaf_hashes(entries)
    assert [h.hex() for h in leaves] == [chain_hash(data) for data in entries]
    assert verify_bulk.nodes_as_stored(verify_bulk.tree_levels(leaves)) == stored


@WITH_FIXTURE
@given(batches, st.integers(1, 9))
def test_a_random_log_verifies_the_same_on_both_paths(
        small_chunks: None, log_batches: list[list[Draft]], every: int) -> None:
    with tempfile.TemporaryDirectory(dir=TMP) as tmp:
        path = Path(tmp) / "broker.db"
        build(path, log_batches, every)
        outcome, exact = fast_and_exact(path)
    assert exact.ok, exact.problem
    assert outcome is not None
    assert outcome.first_problem is None
    assert outcome.root is not None
    assert (outcome.count, outcome.head.decode(), outcome.root.hex()) == (
        exact.entries, exact.head, exact.root)


@WITH_FIXTURE
@given(batches, st.integers(1, 9), st.data())
def test_every_single_byte_change_is_found_at_the_same_entry_by_both_paths(
        small_chunks: None, log_batches: list[list[Draft]], every: int,
        data: st.DataObject) -> None:
    size = sum(map(len, log_batches))
    seq = data.draw(st.integers(0, size - 1), "entry")
    with tempfile.TemporaryDirectory(dir=TMP) as tmp:
        path = Path(tmp) / "broker.db"
        build(path, log_batches, every)
        db = tamper(path)
        try:
            (entry,) = db.execute("SELECT entry FROM audit WHERE seq = ?", (seq,)).fetchone()
            at = data.draw(st.integers(0, len(entry) - 1), "byte")
            changed = bytearray(entry)
            changed[at] ^= data.draw(st.integers(1, 255), "xor")
            db.execute("UPDATE audit SET entry = ? WHERE seq = ?", (bytes(changed), seq))
        finally:
            db.close()
        outcome, exact = fast_and_exact(path)
    assert not exact.ok
    assert entry_named(exact.problem) == seq, exact.problem
    assert outcome is not None
    assert outcome.root is None
    assert outcome.first_problem == seq
