"""Tamper suite on a real audit log built through the pipeline (Broker.ingest and consume).

Every alteration an operator with database access can make is detected by `audit verify`
with a message naming the first bad entry or checkpoint, and a non-zero exit on the CLI.
The log (39 entries) has checkpoints at sizes 1 (its first write), every 8 entries, and 39
(shutdown); see audit_support.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from broker import cli
from broker.audit.checkpoint import Checkpoint
from broker.audit.entries import chain_hash, seal
from broker.audit.merkle import leaf_hash
from broker.audit.tree import Frontier
from tests.unit.audit_support import (
    audit_of,
    build_log,
    checkpoint_sizes,
    copy_log,
    entries,
    open_broker,
    other_signer,
    tampering,
    verify,
)

SIZE = 39
CHECKPOINTS = [1, 8, 16, 24, 32, 39]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("audit") / "data"
    build_log(path)
    return path


@pytest.fixture
def log(template: Path, tmp_path: Path) -> Path:
    return copy_log(template, tmp_path / "data")


def cli_verify(data: Path, *extra: str) -> tuple[int, dict[str, object]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["--data-dir", str(data), "--json", "audit", "verify", *extra])
    return code, json.loads(out.getvalue())


def test_the_untouched_log_verifies(log: Path) -> None:
    report = verify(log)
    assert report.ok, report.problem
    assert (report.entries, report.checkpoints, report.signed_size) == (SIZE, 6, SIZE)
    with tampering(log) as db:
        assert checkpoint_sizes(db) == CHECKPOINTS
    code, payload = cli_verify(log)
    assert code == 0
    assert payload["ok"] is True
    assert payload["unsigned_entries"] == 0


@pytest.mark.parametrize("seq", [0, 5, 21, 22, 33, 38])
@pytest.mark.parametrize("where", [0, 2, 10, 12, 80, -1])
def test_a_byte_flipped_in_any_entry_names_that_entry(log: Path, seq: int, where: int) -> None:
    with tampering(log) as db:
        data = bytearray(entries(db)[seq][1])
        data[where] ^= 0x01
        db.execute("UPDATE audit SET entry = ? WHERE seq = ?", (bytes(data), seq))
    report = verify(log)
    assert not report.ok
    assert report.problem is not None
    assert report.problem.startswith(f"entry {seq}:"), report.problem
    code, payload = cli_verify(log)
    assert code == 1
    assert payload["problem"] == report.problem


def test_a_flipped_header_byte_says_it_is_not_an_audit_entry(log: Path) -> None:
    with tampering(log) as db:
        data = bytearray(entries(db)[4][1])
        data[3] ^= 0xFF
        db.execute("UPDATE audit SET entry = ? WHERE seq = 4", (bytes(data),))
    assert verify(log).problem == ("entry 4: is not an audit entry (its header is not the "
                                   "audit_entry single-object header)")


def test_a_deleted_entry_is_missing(log: Path) -> None:
    with tampering(log) as db:
        db.execute("DELETE FROM audit WHERE seq = 12")
    assert verify(log).problem == ("entry 12: missing; the next stored entry is at position "
                                   "13 (entries were deleted)")


def test_a_deleted_entry_with_the_rest_renumbered_is_caught_by_its_seq(log: Path) -> None:
    with tampering(log) as db:
        db.execute("DELETE FROM audit WHERE seq = 12")
        db.execute("UPDATE audit SET seq = seq - 1 WHERE seq > 12")
    assert verify(log).problem == ("entry 12: carries seq 13; entries were reordered, "
                                   "inserted or duplicated")


def test_reordered_entries_are_caught(log: Path) -> None:
    with tampering(log) as db:
        rows = entries(db)
        db.execute("UPDATE audit SET entry = ? WHERE seq = 7", (rows[8][1],))
        db.execute("UPDATE audit SET entry = ? WHERE seq = 8", (rows[7][1],))
    assert verify(log).problem == ("entry 7: carries seq 8; entries were reordered, "
                                   "inserted or duplicated")


def test_an_inserted_entry_is_caught(log: Path) -> None:
    with tampering(log) as db:
        rows = entries(db)
        db.execute("UPDATE audit SET seq = seq + 1000 WHERE seq >= 20")
        db.execute("UPDATE audit SET seq = seq - 999 WHERE seq >= 1000")
        db.execute("INSERT INTO audit (seq, entry, entry_hash) VALUES (20, ?, 'x')",
                   (rows[3][1],))
    assert verify(log).problem == ("entry 20: carries seq 3; entries were reordered, "
                                   "inserted or duplicated")


def test_a_duplicated_entry_is_caught(log: Path) -> None:
    with tampering(log) as db:
        rows = entries(db)
        db.execute("UPDATE audit SET entry = ? WHERE seq = 16", (rows[15][1],))
    assert verify(log).problem == ("entry 16: carries seq 15; entries were reordered, "
                                   "inserted or duplicated")


@pytest.mark.parametrize("keep", [0, 10, 25, 38])
def test_a_truncated_log_is_caught(log: Path, keep: int) -> None:
    with tampering(log) as db:
        db.execute("DELETE FROM audit WHERE seq >= ?", (keep,))
    report = verify(log)
    assert report.problem is not None
    assert report.problem.startswith(f"entry {keep}: missing; a checkpoint covers"), \
        report.problem
    assert "truncated" in report.problem


def test_truncating_entries_checkpoints_and_tree_together_still_leaves_a_trace(
        log: Path) -> None:
    # An operator who also deletes the checkpoints and tree rows above: the tail is gone,
    # but an auditor's kept checkpoint (--trusted-checkpoint) still catches it.
    with open_broker(log) as broker:
        kept = audit_of(broker).store.latest_checkpoint()
    assert kept is not None
    with tampering(log) as db:
        db.execute("DELETE FROM audit WHERE seq >= 30")
        db.execute("DELETE FROM audit_checkpoint WHERE size > 30")
        db.execute("DELETE FROM audit_node WHERE pos >= ?", (2 * 30 - (30).bit_count(),))
        # ... and the index rows of the tail (left behind, `audit verify` reports them)
        db.execute("DELETE FROM audit_index WHERE seq >= 30")
        db.execute("DELETE FROM audit_subject WHERE seq >= 30")
    assert verify(log).ok  # the shortened log is self-consistent ...
    report = verify(log, trusted_notes=[kept.note])
    assert report.problem == ("entry 30: missing; a checkpoint covers 39 entries, the log "
                              "holds 30 (the log was truncated)")


def test_a_rewritten_history_is_caught_by_the_signed_checkpoint(log: Path) -> None:
    # The strongest attack without the signing key: alter entry 25, then recompute every
    # chain hash and tree node after it. Only the signatures still tell the truth.
    with open_broker(log) as broker:
        schema = broker.registry.get("records.audit_entry")
    with tampering(log) as db:
        rows = entries(db)
        decoded = [schema.decode(d) for _, d in rows]
        decoded[25]["recipient"] = "boa-hor-zuid"
        db.execute("DELETE FROM audit WHERE seq >= 25")
        db.execute("DELETE FROM audit_node")
        prev = chain_hash(rows[24][1])
        frontier = Frontier()
        for _, data in rows[:25]:
            frontier.push(leaf_hash(data))
        for entry in decoded[25:]:
            body = {k: v for k, v in entry.items() if k not in ("seq", "prev_hash", "logged_at")}
            sealed = seal(schema, body, entry["seq"], prev, int(entry["logged_at"].timestamp()
                                                                * 1000))
            db.execute("INSERT INTO audit (seq, entry, entry_hash) VALUES (?, ?, ?)",
                       (sealed.seq, sealed.data, sealed.entry_hash))
            frontier.push(leaf_hash(sealed.data))
            prev = sealed.entry_hash
        frontier = Frontier()
        for _, data in entries(db):
            for node in frontier.push(leaf_hash(data)):
                db.execute("INSERT INTO audit_node (pos, hash) VALUES (?, ?)",
                           (node.position, node.hash))
    report = verify(log)
    assert report.problem is not None
    assert report.problem.startswith("checkpoint at size 32: the signed root "), report.problem
    assert report.problem.endswith("entries 24..31 differ from what was signed")


def test_a_tree_cache_node_altered_is_caught(log: Path) -> None:
    with tampering(log) as db:
        db.execute("UPDATE audit_node SET hash = zeroblob(32) WHERE pos = 13")  # level 2
    assert verify(log).problem == ("tree node level 2 index 1 (entries 4..7) does not match "
                                   "the entries; proofs served from the tree cache would fail")


def test_a_leaf_hash_deleted_from_the_cache_is_caught(log: Path) -> None:
    with tampering(log) as db:
        db.execute("DELETE FROM audit_node WHERE pos >= 7")
    assert verify(log).problem == "entry 4: its leaf hash is missing from the tree cache"


def _note_at(log: Path, size: int) -> str:
    with tampering(log) as db:
        return str(db.execute("SELECT note FROM audit_checkpoint WHERE size = ?",
                              (size,)).fetchone()[0])


def _replace_note(log: Path, size: int, note: str) -> None:
    with tampering(log) as db:
        db.execute("UPDATE audit_checkpoint SET note = ? WHERE size = ?", (note, size))


def test_a_checkpoint_replaced_by_another_of_the_same_log_is_caught(log: Path) -> None:
    _replace_note(log, 24, _note_at(log, 16))
    assert verify(log).problem == ("checkpoint at size 24: its signed note is for size 16; "
                                   "the checkpoint was replaced")


def test_a_checkpoint_signed_by_another_key_is_caught(log: Path) -> None:
    origin = "covenant-broker/amstelveen-veiligheid"
    forged = other_signer(origin).sign(Checkpoint(origin, 24, b"\x07" * 32))
    _replace_note(log, 24, forged)
    report = verify(log)
    assert report.problem is not None
    assert report.problem.startswith(f"checkpoint at size 24: no signature by key {origin}")


def test_a_checkpoint_with_the_right_key_but_another_root_is_caught(log: Path) -> None:
    # What a thief of the signing key could do: a fork. It does not match the entries.
    with open_broker(log) as broker:
        signer = audit_of(broker).signer
    _replace_note(log, 16, signer.sign(Checkpoint(signer.name, 16, b"\x01" * 32)))
    report = verify(log)
    assert report.problem is not None
    assert report.problem.startswith("checkpoint at size 16: the signed root 0101"), \
        report.problem


@pytest.mark.parametrize("mangle", [
    lambda note: note.replace("\n39\n", "\n40\n"),
    lambda note: note[:-10] + ("A" if note[-10] != "A" else "B") + note[-9:],
    lambda note: note.replace("covenant-broker/amstelveen-veiligheid\n",
                              "covenant-broker/elders\n", 1),
])
def test_a_forged_or_edited_signature_or_body_is_caught(log: Path,
                                                        mangle: Callable[[str], str]) -> None:
    _replace_note(log, SIZE, mangle(_note_at(log, SIZE)))
    report = verify(log)
    assert report.problem is not None
    assert report.problem.startswith(f"checkpoint at size {SIZE}: "), report.problem


def test_the_wrong_public_key_is_rejected(log: Path) -> None:
    stranger = other_signer("covenant-broker/amstelveen-veiligheid")
    report = verify(log, verifier_key=stranger.verifier_key())
    assert report.problem is not None
    assert report.problem.startswith("checkpoint at size 1: no signature by key "
                                     "covenant-broker/amstelveen-veiligheid")
    code, payload = cli_verify(log, "--public-key", stranger.verifier_key())
    assert code == 1
    assert payload["problem"] == report.problem


def test_the_wrong_origin_is_rejected(log: Path) -> None:
    with open_broker(log) as broker:
        key = audit_of(broker).verifier_key()
    code, payload = cli_verify(log, "--public-key", key, "--origin", "covenant-broker/x")
    assert code == 1
    assert "wrong origin" in str(payload["problem"])


def test_the_pinned_key_as_pem_file_with_origin_verifies(log: Path, tmp_path: Path) -> None:
    with open_broker(log) as broker:
        pem, origin = audit_of(broker).public_key_pem(), audit_of(broker).origin
    key = tmp_path / "auditor.pem"
    key.write_text(pem)
    assert cli_verify(log, "--public-key", str(key), "--origin", origin)[0] == 0


def test_an_unsigned_tail_is_reported_and_can_be_required_signed(log: Path) -> None:
    with tampering(log) as db:
        db.execute("DELETE FROM audit_checkpoint WHERE size = 39")
    report = verify(log)
    assert report.ok
    assert report.unsigned == 7
    code, payload = cli_verify(log, "--require-signed")
    assert code == 1
    assert payload["problem"] == ("entry 32: 7 entries after the last checkpoint are not "
                                  "signed")
