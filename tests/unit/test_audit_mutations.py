"""Mutation loop: random logs, random alterations, zero false accepts.

Logs are built through the real sequencer and SQLite backend (not the pipeline, so many
shapes are cheap): random drafts in random batches, checkpoints every 1..9 entries, and the
shutdown checkpoint. Every mutation an operator could make to what the log stores must
make `verify` fail (or, for a deleted last checkpoint, leave entries reported unsigned);
every mutation of a proof bundle must make the offline check fail.
"""

from __future__ import annotations

import base64
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.audit.bundles import BundleError, inclusion_bundle, verify_inclusion_bundle
from broker.audit.checkpoint import CheckpointSigner, parse_verifier_key
from broker.audit.entries import GENESIS, Draft, chain_hash, draft, seal
from broker.audit.merkle import leaf_hash
from broker.audit.sequencer import AuditSequencer
from broker.audit.tree import Frontier, node_count
from broker.audit.verify import AuditReport, verify_log
from broker.backends.embedded.event_log import SqliteEventLog
from broker.model.schemas import SchemaRegistry
from tests.unit.audit_support import other_signer

SCHEMA = SchemaRegistry(Path(__file__).resolve().parents[2] / "schemas").get(
    "records.audit_entry")
ORIGIN = "test/mutations"
SIGNER: CheckpointSigner = other_signer(ORIGIN)
VERIFIER = parse_verifier_key(SIGNER.verifier_key())
# tmpfs where there is one: fsync is then free, and each example builds a fresh database
TMP = "/dev/shm" if Path("/dev/shm").is_dir() else None
FAST = settings(max_examples=100, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

drafts = st.builds(
    lambda name, recipient, decision, subjects, t: draft(
        name, trace_id=None, start_ms=t, recipient=recipient, purpose="p",
        decision=decision, data_subjects=[{"pseudonym": s, "id_type": "bsn", "role": "x.bsn"}
                                          for s in subjects]),
    st.sampled_from(["decide", "access", "tombstone", "quarantine"]),
    st.sampled_from([None, "boa-hor-noord", "preventie"]),
    st.sampled_from([None, "release", "withhold"]),
    st.lists(st.sampled_from(["a" * 32, "b" * 32, "0123456789abcdef" * 2]), max_size=2,
             unique=True),
    st.integers(1_700_000_000_000, 1_800_000_000_000))

batches = st.lists(st.lists(drafts, min_size=1, max_size=6), min_size=1, max_size=7)


def build(path: Path, log_batches: list[list[Draft]], every: int) -> None:
    sequencer = AuditSequencer(SCHEMA, origin=ORIGIN, signer=SIGNER, every_entries=every,
                               every_seconds=3600, clock=lambda: 1_800_000_000_000)
    log = SqliteEventLog(path, SCHEMA, sequencer)
    log.db.execute("PRAGMA synchronous=OFF")  # a test needs no durability: faster
    try:
        for batch in log_batches:
            log.append_audit(batch, 0)
    finally:
        log.close()


def check(path: Path) -> AuditReport:
    log = SqliteEventLog(path, SCHEMA, AuditSequencer(SCHEMA, origin=ORIGIN))
    try:
        return verify_log(log.audit, SCHEMA, VERIFIER, ORIGIN)
    finally:
        log.close()


def tamper(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    for table in ("audit", "audit_node", "audit_checkpoint"):
        for action in ("update", "delete"):
            db.execute(f"DROP TRIGGER IF EXISTS {table}_no_{action}")
    return db


def _flip(data: bytes, at: int, bit: int) -> bytes:
    out = bytearray(data)
    out[at % len(out)] ^= 1 << bit
    return bytes(out)


def _rewrite_from(db: sqlite3.Connection, start: int, size: int) -> None:
    """Alter entry `start` and recompute every chain hash and tree node: a full rewrite."""
    rows = [bytes(r[0]) for r in db.execute("SELECT entry FROM audit ORDER BY seq")]
    decoded = [SCHEMA.decode(d) for d in rows]
    decoded[start]["reason"] = "rewritten"
    db.execute("DELETE FROM audit WHERE seq >= ?", (start,))
    db.execute("DELETE FROM audit_node")
    prev = chain_hash(rows[start - 1]) if start else GENESIS
    for entry in decoded[start:]:
        body = {k: v for k, v in entry.items() if k not in ("seq", "prev_hash", "logged_at")}
        sealed = seal(SCHEMA, body, entry["seq"], prev, 0)
        db.execute("INSERT INTO audit (seq, entry, entry_hash) VALUES (?, ?, ?)",
                   (sealed.seq, sealed.data, sealed.entry_hash))
        prev = sealed.entry_hash
    frontier = Frontier()
    for (data,) in db.execute("SELECT entry FROM audit ORDER BY seq").fetchall():
        for node in frontier.push(leaf_hash(bytes(data))):
            db.execute("INSERT INTO audit_node (pos, hash) VALUES (?, ?)",
                       (node.position, node.hash))
    assert frontier.size == size


MUTATIONS = ["flip", "delete", "delete_renumber", "swap", "duplicate", "insert", "truncate",
             "note_flip", "note_swap", "node_flip", "node_delete", "rewrite", "drop_last_cp"]


def mutate(db: sqlite3.Connection, kind: str, data: st.DataObject, size: int) -> None:
    pick = data.draw(st.integers(0, size - 1), "entry")
    other = data.draw(st.integers(0, size - 1), "other entry")
    rows = [bytes(r[0]) for r in db.execute("SELECT entry FROM audit ORDER BY seq")]
    if kind == "flip":
        at, bit = data.draw(st.integers(0, 10_000)), data.draw(st.integers(0, 7))
        db.execute("UPDATE audit SET entry = ? WHERE seq = ?", (_flip(rows[pick], at, bit),
                                                                pick))
    elif kind == "delete":
        db.execute("DELETE FROM audit WHERE seq = ?", (pick,))
    elif kind == "delete_renumber":
        db.execute("DELETE FROM audit WHERE seq = ?", (pick,))
        db.execute("UPDATE audit SET seq = seq - 1 WHERE seq > ?", (pick,))
    elif kind in ("swap", "duplicate"):
        if pick == other:
            other = (pick + 1) % size
        if pick == other:  # a log of one entry: duplicate it onto a new position instead
            db.execute("INSERT INTO audit (seq, entry, entry_hash) VALUES (1, ?, '')",
                       (rows[0],))
            return
        db.execute("UPDATE audit SET entry = ? WHERE seq = ?", (rows[other], pick))
        if kind == "swap":
            db.execute("UPDATE audit SET entry = ? WHERE seq = ?", (rows[pick], other))
    elif kind == "insert":
        db.execute("UPDATE audit SET seq = seq + 100000 WHERE seq >= ?", (other,))
        db.execute("UPDATE audit SET seq = seq - 99999 WHERE seq >= 100000")
        db.execute("INSERT INTO audit (seq, entry, entry_hash) VALUES (?, ?, '')",
                   (other, rows[pick]))
    elif kind == "truncate":
        db.execute("DELETE FROM audit WHERE seq >= ?", (pick,))
    elif kind in ("note_flip", "note_swap"):
        notes = db.execute("SELECT size, note FROM audit_checkpoint ORDER BY size").fetchall()
        size_at, note = notes[data.draw(st.integers(0, len(notes) - 1), "checkpoint")]
        if kind == "note_flip" or len(notes) == 1:
            at = data.draw(st.integers(0, len(note) - 1), "char")
            note = note[:at] + chr(ord(note[at]) ^ 1) + note[at + 1:]
        else:
            note = next(n for s, n in notes if s != size_at)
        db.execute("UPDATE audit_checkpoint SET note = ? WHERE size = ?", (note, size_at))
    elif kind in ("node_flip", "node_delete"):
        position = data.draw(st.integers(0, node_count(size) - 1), "node")
        if kind == "node_delete":
            db.execute("DELETE FROM audit_node WHERE pos = ?", (position,))
        else:
            db.execute("UPDATE audit_node SET hash = ? WHERE pos = ?",
                       (b"\xff" * 32, position))
    elif kind == "rewrite":
        _rewrite_from(db, pick, size)
    elif kind == "drop_last_cp":
        db.execute("DELETE FROM audit_checkpoint WHERE size = ?", (size,))


@FAST
@given(batches, st.integers(1, 9), st.sampled_from(MUTATIONS), st.data())
def test_random_mutations_of_random_logs_are_never_accepted(
        log_batches: list[list[Draft]], every: int, kind: str, data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory(dir=TMP) as tmp:
        path = Path(tmp) / "broker.db"
        build(path, log_batches, every)
        size = sum(map(len, log_batches))
        before = check(path)
        assert before.ok, before.problem
        assert (before.entries, before.signed_size) == (size, size)
        db = tamper(path)
        try:
            mutate(db, kind, data, size)
        finally:
            db.close()
        after = check(path)
        if kind == "drop_last_cp":
            assert after.unsigned > 0 or not after.ok
        else:
            assert not after.ok, f"{kind} was accepted"
            assert after.problem is not None
            assert after.problem.startswith(("entry ", "checkpoint at size ", "tree node "))


def _bundle_mutations(bundle: dict[str, Any], kind: str, data: st.DataObject) -> None:
    proof = bundle["inclusion_proof"]
    if kind == "index":
        bundle["log_index"] += data.draw(st.sampled_from([-1, 1, 2, 1 << 20]))
    elif kind == "size":
        bundle["tree_size"] += data.draw(st.sampled_from([-1, 1]))
    elif kind == "entry_bytes":
        raw = base64.b64decode(bundle["entry_base64"])
        flipped = _flip(raw, data.draw(st.integers(0, 10_000)), data.draw(st.integers(0, 7)))
        bundle["entry_base64"] = base64.b64encode(flipped).decode()
    elif kind == "proof_flip" and proof:
        at = data.draw(st.integers(0, len(proof) - 1))
        raw = _flip(base64.b64decode(proof[at]), data.draw(st.integers(0, 31)),
                    data.draw(st.integers(0, 7)))
        proof[at] = base64.b64encode(raw).decode()
    elif kind == "proof_drop" and proof:
        del proof[data.draw(st.integers(0, len(proof) - 1))]
    elif kind == "proof_swap" and len(proof) > 1:
        proof[0], proof[-1] = proof[-1], proof[0]
        if proof[0] == proof[-1]:
            proof.append(proof[0])
    elif kind == "decoded":
        bundle["entry"]["reason"] = "edited"
    elif kind == "note":
        note = bundle["checkpoint"]
        at = data.draw(st.integers(0, len(note) - 1))
        bundle["checkpoint"] = note[:at] + chr(ord(note[at]) ^ 1) + note[at + 1:]
    else:  # including the proof mutations on an empty proof: add a hash
        proof.append(base64.b64encode(b"\x00" * 32).decode())


@FAST
@given(batches, st.sampled_from(["index", "size", "entry_bytes", "proof_flip", "proof_drop",
                                 "proof_swap", "decoded", "note", "proof_add"]), st.data())
def test_random_mutations_of_proof_bundles_are_never_accepted(
        log_batches: list[list[Draft]], kind: str, data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory(dir=TMP) as tmp:
        path = Path(tmp) / "broker.db"
        build(path, log_batches, 5)
        size = sum(map(len, log_batches))
        log = SqliteEventLog(path, SCHEMA, AuditSequencer(SCHEMA, origin=ORIGIN))
        try:
            bundle = inclusion_bundle(log.audit, SCHEMA, ORIGIN,
                                      data.draw(st.integers(0, size - 1), "entry"))
        finally:
            log.close()
    verify_inclusion_bundle(bundle, VERIFIER, ORIGIN, SCHEMA)  # the honest bundle passes
    _bundle_mutations(bundle, kind, data)
    try:
        verify_inclusion_bundle(bundle, VERIFIER, ORIGIN, SCHEMA)
    except BundleError:
        return
    raise AssertionError(f"mutated bundle ({kind}) was accepted")
