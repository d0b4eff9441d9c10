"""The Kafka audit integrator without Kafka: chains sealed as the Kafka writers seal them,
integrated into a real SQLite integrated log with a real Ed25519 checkpoint signer."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.audit.chain import verify_chain
from broker.audit.checkpoint import CheckpointSigner
from broker.audit.entries import GENESIS, Draft, draft, seal
from broker.audit.integrate import (
    SOURCE_PARTITION,
    SOURCE_SEQ,
    SOURCE_SHA256,
    ChainPosition,
    ChainRead,
    PendingChain,
    SourceCheck,
    pending_chain,
    rounds,
    source_draft,
)
from broker.audit.sequencer import AuditSequencer
from broker.audit.service import AuditLog
from broker.audit.sqlite_integrated import IntegratedAuditDb
from broker.audit.store import QueryFilter
from broker.backends.kafka.audit_integrator import Chains, integrate
from broker.config import load_settings
from broker.errors import AuditIntegrityError, StorageError
from broker.model.schemas import Schema, SchemaRegistry

ORIGIN = "covenant-broker/test-integrate"
SUBJECT = "ab" * 16
SCHEMA: Schema = SchemaRegistry(load_settings(environ={}).schemas_dir).get(
    "records.audit_entry")
SIGNER = CheckpointSigner(Ed25519PrivateKey.generate(), ORIGIN)


def chain(partition: int, count: int, start: int = 0, prev: str = GENESIS,
          tag: str = "") -> list[bytes]:
    """`count` entries of one partition's chain, as kafka_chain.AuditChain seals them."""
    out = []
    for seq in range(start, start + count):
        entry = draft("decide", trace_id=None, start_ms=1_000 + seq, recipient=f"r{partition}",
                      purpose="p", decision="release", event_id=f"{tag}{partition}-{seq}",
                      data_subjects=[{"pseudonym": SUBJECT, "id_type": "bsn",
                                      "role": "victim"}] if seq % 2 else [],
                      detail={"n": str(seq)})
        sealed = seal(SCHEMA, entry, seq, prev, 5_000 + seq)
        out.append(sealed.data)
        prev = sealed.entry_hash
    return out


def verified(data_by_partition: dict[int, list[bytes]]) -> Chains:
    return {p: ChainRead.whole(data, verify_chain(SCHEMA, enumerate(data)))
            for p, data in data_by_partition.items()}


def extend(data: list[bytes], count: int) -> list[bytes]:
    head = verify_chain(SCHEMA, enumerate(data)).head
    return data + chain(0, count, start=len(data), prev=head, tag="x")


def open_store(tmp_path: Path, every: int = 4) -> IntegratedAuditDb:
    store = IntegratedAuditDb(tmp_path, AuditSequencer(SCHEMA, origin=ORIGIN, signer=SIGNER,
                                                       every_entries=every))
    store.lock_writer()
    return store


def sources(store: IntegratedAuditDb) -> list[tuple[int, int]]:
    out = []
    for _, data in store.audit.audit_entries():
        detail = SCHEMA.decode(data)["detail"]
        out.append((int(detail[SOURCE_PARTITION]), int(detail[SOURCE_SEQ])))
    return out


def test_rounds_take_a_batch_of_each_chain_in_turn() -> None:
    def pending(p: int, n: int) -> PendingChain:
        return PendingChain(ChainPosition(p, 0), [{}] * n, [b""] * n, GENESIS)

    chains = [pending(0, 3), pending(1, 0), pending(2, 5)]
    got = [[(c.start.partition, lo, hi) for c, lo, hi in taken]
           for taken in rounds(chains, 2)]
    assert got == [[(0, 0, 2), (2, 0, 2)], [(0, 2, 3), (2, 2, 4)], [(2, 4, 5)]]
    with pytest.raises(ValueError, match="batch"):
        next(rounds(chains, 0))


def test_integrate_sequences_every_chain_entry_once(tmp_path: Path) -> None:
    data = {0: chain(0, 3), 1: chain(1, 0), 2: chain(2, 5)}
    store = open_store(tmp_path)
    try:
        appended, positions = integrate(store, SCHEMA, verified(data), batch=2)
        assert appended == 8
        assert sources(store) == [(0, 0), (0, 1), (2, 0), (2, 1), (0, 2), (2, 2), (2, 3),
                                  (2, 4)]
        for p, items in data.items():
            assert positions[p] == ChainPosition(p, len(items),
                                                 verify_chain(SCHEMA, enumerate(items)).head)
        assert store.positions(3) == positions
        log = AuditLog(store.audit, SCHEMA, ORIGIN, SIGNER)
        report = log.verify()
        assert report.ok, report.problem
        assert report.entries == 8
        # Same fields as on Kafka; global seq and prev_hash; the source in detail.
        first = SCHEMA.decode(next(store.audit.audit_entries(2))[1])
        kafka = SCHEMA.decode(data[2][0])
        assert (first["seq"], first["event_id"], first["detail"]["n"]) == (2, "2-0", "0")
        assert first["trace_id"] == kafka["trace_id"]
        assert first["prev_hash"] != kafka["prev_hash"]
        assert len(first["detail"][SOURCE_SHA256]) == 64
        # The query and subject indexes come with the sequencer.
        assert [SCHEMA.decode(d)["event_id"] for _, d in
                store.audit.query(QueryFilter(recipient="r0"))] == ["0-0", "0-1", "0-2"]
        assert len(store.audit.subject_seqs(bytes.fromhex(SUBJECT))) == 3
        check = SourceCheck(SCHEMA, data)
        assert [check.check(s, d) for s, d in store.audit.audit_entries()] == [None] * 8
        assert check.integrated == {0: 3, 1: 0, 2: 5}
    finally:
        store.close()


def test_a_second_pass_appends_only_new_entries(tmp_path: Path) -> None:
    data = {0: chain(0, 2), 1: chain(1, 1)}
    store = open_store(tmp_path)
    try:
        assert integrate(store, SCHEMA, verified(data))[0] == 3
        assert integrate(store, SCHEMA, verified(data))[0] == 0
        data[0] = extend(data[0], 3)
        assert integrate(store, SCHEMA, verified(data))[0] == 3
        assert sources(store) == [(0, 0), (0, 1), (1, 0), (0, 2), (0, 3), (0, 4)]
        assert store.positions(2)[0].entries == 5
    finally:
        store.close()


class _CrashAfter(IntegratedAuditDb):
    """Dies (like a killed process) before its `rounds`-th transaction."""

    rounds = 1

    def append(self, batch: Sequence[tuple[list[Draft], ChainPosition]]) -> int:
        self.rounds -= 1
        if self.rounds < 0:
            raise KeyboardInterrupt
        return super().append(batch)


def test_a_crash_mid_pass_neither_skips_nor_duplicates(tmp_path: Path) -> None:
    data = {0: chain(0, 5), 1: chain(1, 4)}
    crashing = _CrashAfter(tmp_path, AuditSequencer(SCHEMA, origin=ORIGIN, signer=SIGNER))
    crashing.lock_writer()
    try:
        with pytest.raises(KeyboardInterrupt):
            integrate(crashing, SCHEMA, verified(data), batch=2)
    finally:
        crashing.close()
    store = open_store(tmp_path)
    try:
        assert [pos.entries for pos in store.positions(2).values()] == [2, 2]
        assert integrate(store, SCHEMA, verified(data), batch=2)[0] == 5
        check = SourceCheck(SCHEMA, data)
        assert all(check.check(s, d) is None for s, d in store.audit.audit_entries())
        assert check.integrated == {0: 5, 1: 4}
    finally:
        store.close()


def test_a_chain_break_stops_before_anything_is_integrated(tmp_path: Path) -> None:
    data = {0: chain(0, 2), 1: chain(1, 4)}
    forged = SCHEMA.decode(data[1][2])
    forged["decision"] = "withhold"
    data[1][2] = SCHEMA.encode(forged)
    store = open_store(tmp_path)
    try:
        with pytest.raises(AuditIntegrityError, match=r"audit partition 1: entry 3: prev_hash"):
            integrate(store, SCHEMA, verified(data))
        assert store.audit.audit_size() == 0
    finally:
        store.close()


def test_a_topic_rewritten_or_shortened_after_integration_is_refused(tmp_path: Path) -> None:
    data = {0: chain(0, 3)}
    store = open_store(tmp_path)
    try:
        integrate(store, SCHEMA, verified(data))
        rewritten = {0: chain(0, 4, tag="other")}  # a valid chain, but not the one integrated
        with pytest.raises(AuditIntegrityError, match="partition 0: entry 2 is not the entry"):
            integrate(store, SCHEMA, verified(rewritten))
        with pytest.raises(AuditIntegrityError, match="holds 2 committed entries but 3"):
            integrate(store, SCHEMA, verified({0: data[0][:2]}))
        assert store.audit.audit_size() == 3
    finally:
        store.close()


def test_source_check_finds_altered_skipped_and_repeated_entries(tmp_path: Path) -> None:
    data = {0: chain(0, 3)}
    store = open_store(tmp_path)
    try:
        integrate(store, SCHEMA, verified(data))
        entries = list(store.audit.audit_entries())
    finally:
        store.close()
    altered = SCHEMA.decode(entries[1][1])
    altered["recipient"] = "someone-else"
    check = SourceCheck(SCHEMA, data)
    assert check.check(0, entries[0][1]) is None
    assert check.check(1, SCHEMA.encode(altered)) == \
        "entry 1: differs from partition 0 entry 1 on Kafka"
    check = SourceCheck(SCHEMA, data)
    assert check.check(0, entries[0][1]) is None
    assert "where entry 1 was due" in (check.check(1, entries[0][1]) or "")
    assert "where entry 0 was due" in (SourceCheck(SCHEMA, data).check(0, entries[2][1]) or "")
    assert "not on Kafka" in (SourceCheck(SCHEMA, {0: []}).check(0, entries[0][1]) or "")


def test_source_draft_refuses_an_entry_that_already_names_a_source() -> None:
    data = chain(0, 1)[0]
    record = SCHEMA.decode(data)
    record["detail"] = {SOURCE_SEQ: "7"}
    with pytest.raises(AuditIntegrityError, match="already carries kafka_seq"):
        source_draft(record, data, 0)


def test_one_integrator_per_data_directory(tmp_path: Path) -> None:
    first = open_store(tmp_path)
    second = IntegratedAuditDb(tmp_path, AuditSequencer(SCHEMA, origin=ORIGIN, signer=SIGNER))
    try:
        with pytest.raises(StorageError, match="another `audit integrate`"):
            second.lock_writer()
        with pytest.raises(StorageError, match="only the integrator appends"):
            second.append([])
        first.close()
        second.lock_writer()  # released with the first one's close
    finally:
        first.close()
        second.close()


def test_pending_chain_continues_from_the_stored_head() -> None:
    data = chain(0, 4)
    report = verify_chain(SCHEMA, enumerate(data))
    head2 = verify_chain(SCHEMA, enumerate(data[:2])).head
    pending = pending_chain(SCHEMA, ChainPosition(0, 2, head2),
                            ChainRead.whole(data, report))
    assert [r["seq"] for r in pending.records] == [2, 3]
    assert pending.position_after(1) == ChainPosition(
        0, 3, verify_chain(SCHEMA, enumerate(data[:3])).head)
    assert pending.position_after(2) == ChainPosition(0, 4, report.head)


def test_a_pass_reads_on_from_the_stored_offset_and_checks_the_continuation() -> None:
    # Kafka offsets are not entry numbers (transaction markers take offsets): entries 2 and
    # 3 at offsets 5 and 9, the read ended at offset 11.
    data = chain(0, 4)
    head2 = verify_chain(SCHEMA, enumerate(data[:2])).head
    stored = ChainPosition(0, 2, head2, next_offset=5)
    report = verify_chain(SCHEMA, enumerate(data[2:], 2), count=2, head=head2)
    assert report.ok
    assert report.entries == 4
    pending = pending_chain(SCHEMA, stored, ChainRead(2, data[2:], [5, 9], 11, report))
    assert [r["seq"] for r in pending.records] == [2, 3]
    assert pending.position_after(1).next_offset == 9
    assert pending.position_after(2).next_offset == 11
    assert pending.position_after(2) == ChainPosition(0, 4, report.head)
    # a continuation that does not follow the stored head is a break, named by entry
    other = chain(0, 4, tag="other")
    broken = verify_chain(SCHEMA, enumerate(other[2:], 2), count=2, head=head2)
    assert broken.problem is not None
    assert broken.problem.startswith("entry 2: prev_hash does not match")
    with pytest.raises(AuditIntegrityError, match="audit partition 0: entry 2"):
        pending_chain(SCHEMA, stored, ChainRead(2, other[2:], [5, 9], 11, broken))
    # a read that starts after the stored position cannot be integrated from
    with pytest.raises(ValueError, match="read from entry 3"):
        pending_chain(SCHEMA, stored, ChainRead(3, data[3:], [9], 11, verify_chain(
            SCHEMA, enumerate(data[3:], 3), count=3,
            head=verify_chain(SCHEMA, enumerate(data[:3])).head)))


def test_integrate_refuses_the_embedded_backend(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from broker.cli import main

    assert main(["--data-dir", str(tmp_path), "audit", "integrate"]) == 2
    assert "needs the Kafka backend" in capsys.readouterr().err
    assert not (tmp_path / "audit-kafka.db").exists()
