"""The audit log's writing side and privacy-officer queries on the embedded backend.

Sequencer under concurrent writers, checkpoint policy (every N entries, every T seconds, at
shutdown), the signing key, LDV fields of every record kind, the migration of an older
log, and `audit query` through the index.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from broker import cli
from broker.audit.checkpoint import parse_verifier_key, verifier_key_string
from broker.audit.entries import draft
from broker.audit.sequencer import AuditSequencer
from broker.audit.sqlite_store import SqliteAudit
from broker.audit.verify import verify_log
from broker.backends.embedded.event_log import SqliteEventLog
from broker.errors import ConfigError
from broker.model.render import to_json
from broker.model.schemas import SchemaRegistry
from tests.unit.audit_support import (
    NOW,
    audit_of,
    build_log,
    checkpoint_sizes,
    copy_log,
    open_broker,
    other_signer,
    settings_for,
    tampering,
    verify,
)

SCHEMA = SchemaRegistry(Path(__file__).resolve().parents[2] / "schemas").get(
    "records.audit_entry")
ORIGIN = "test/log"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("log") / "data"
    build_log(path)
    return path


def run(data: Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["--data-dir", str(data), *args])
    return code, out.getvalue(), err.getvalue()


def drafts(n: int, tag: str = "x") -> list[dict[str, Any]]:
    return [draft("control", trace_id=None, start_ms=1_700_000_000_000 + i,
                  detail={"writer": tag, "i": str(i)}) for i in range(n)]


def test_concurrent_appenders_never_fork_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "broker.db"
    signer = other_signer(ORIGIN)
    SqliteEventLog(path, SCHEMA).close()  # create the schema once

    def writer(tag: str) -> None:
        log = SqliteEventLog(path, SCHEMA, AuditSequencer(SCHEMA, origin=ORIGIN, signer=signer,
                                                          every_entries=7))
        try:
            for _ in range(15):
                log.append_audit(drafts(3, tag), 0)
        finally:
            log.close()

    threads = [threading.Thread(target=writer, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log = SqliteEventLog(path, SCHEMA)
    try:
        report = verify_log(log.audit, SCHEMA, parse_verifier_key(signer.verifier_key()), ORIGIN)
        writers = {SCHEMA.decode(d)["detail"]["writer"] for _, d in log.audit.audit_entries()}
    finally:
        log.close()
    assert report.ok, report.problem
    assert report.entries == 4 * 15 * 3
    assert report.signed_size == report.entries
    assert writers == {"w0", "w1", "w2", "w3"}


def test_an_append_rolled_back_leaves_the_next_append_on_the_stored_tree(
        tmp_path: Path) -> None:
    # The sequencer keeps the frontier of its last append in memory (keyed by the chain
    # hash it ends with); a transaction that aborts after the append must not leave it
    # building on entries that were never committed.
    path = tmp_path / "broker.db"
    signer = other_signer(ORIGIN)
    log = SqliteEventLog(path, SCHEMA, AuditSequencer(SCHEMA, origin=ORIGIN, signer=signer,
                                                      every_entries=4))
    try:
        log.append_audit(drafts(3, "a"), 0)
        aborted = []

        def append_then_abort() -> None:
            with log._write() as db:
                aborted.extend(log.audit.append(db, drafts(5, "aborted")))
                raise RuntimeError("abort after the append")

        with pytest.raises(RuntimeError):
            append_then_abort()
        assert len(aborted) == 5  # appended, then rolled back
        other = SqliteEventLog(path, SCHEMA, AuditSequencer(SCHEMA, origin=ORIGIN))
        try:  # another writer takes the log to the size the aborted append had reached
            other.append_audit(drafts(5, "other"), 0)
        finally:
            other.close()
        log.append_audit(drafts(6, "b"), 0)
        log.audit.checkpoint()
        report = verify_log(log.audit, SCHEMA, parse_verifier_key(signer.verifier_key()), ORIGIN,
                            bulk=False)
    finally:
        log.close()
    assert report.ok, report.problem
    assert (report.entries, report.signed_size) == (14, 14)


def test_checkpoints_every_n_entries_every_t_seconds_and_at_shutdown(tmp_path: Path) -> None:
    clock = [1_000_000]
    signer = other_signer(ORIGIN)
    sequencer = AuditSequencer(SCHEMA, origin=ORIGIN, signer=signer, every_entries=5,
                               every_seconds=60, clock=lambda: clock[0])
    path = tmp_path / "broker.db"
    log = SqliteEventLog(path, SCHEMA, sequencer)
    log.append_audit(drafts(2), 0)  # the first checkpoint of a log is due at once: 2
    log.append_audit(drafts(2), 0)  # 4 entries: not due
    log.append_audit(drafts(3), 0)  # 7 entries: the boundary at 5, inside the batch
    clock[0] += 59_000
    log.append_audit(drafts(1), 0)  # 8: neither
    clock[0] += 1_000
    log.append_audit(drafts(1), 0)  # 9: 60 s since the last one
    log.append_audit(drafts(3), 0)  # 12: the boundary at 10
    log.close()  # shutdown signs what this process appended after it: 12
    sizes = [int(r[0]) for r in sqlite3.connect(path).execute(
        "SELECT size FROM audit_checkpoint ORDER BY size")]
    assert sizes == [2, 5, 9, 10, 12]
    reader = SqliteEventLog(path, SCHEMA, sequencer)
    reader.close()  # a process that appended nothing signs nothing
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM audit_checkpoint").fetchone() \
        == (5,)


def test_checkpoint_intervals_come_from_the_settings(tmp_path: Path) -> None:
    with open_broker(tmp_path / "data", audit_checkpoint_every_entries=3,
                     audit_checkpoint_every_seconds=3600) as broker:
        for on in (True, False, True, False, True, False, True):
            broker.switch_theme("woninginbraak", on, NOW)
    with tampering(tmp_path / "data") as db:
        assert checkpoint_sizes(db) == [1, 3, 6, 7]
    with pytest.raises(ConfigError, match="audit_log_id"):
        settings_for(tmp_path, audit_log_id="has space")
    with pytest.raises(ConfigError, match="audit_checkpoint_every_seconds"):
        settings_for(tmp_path, audit_checkpoint_every_seconds=0)


def test_the_signing_key_is_separate_owner_only_and_pinned_by_public_key(
        template: Path, tmp_path: Path) -> None:
    log = copy_log(template, tmp_path / "data")
    key_file = log / "keys" / "checkpoint-signing.pem"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert b"PRIVATE KEY" in key_file.read_bytes()
    code, out, _ = run(log, "--json", "audit", "public-key")
    assert code == 0
    printed = json.loads(out)
    assert printed["origin"] == "covenant-broker/amstelveen-veiligheid"
    pem_key = load_pem_public_key(printed["public_key_pem"].encode())
    assert isinstance(pem_key, Ed25519PublicKey)
    assert verifier_key_string(printed["origin"], pem_key) == printed["verifier_key"]
    code, text, _ = run(log, "audit", "public-key")
    assert printed["verifier_key"] in text
    assert "-----BEGIN PUBLIC KEY-----" in text
    assert "PRIVATE" not in text
    code, note, _ = run(log, "audit", "checkpoint")
    assert note.startswith("covenant-broker/amstelveen-veiligheid\n39\n")


def test_a_configured_log_id_names_the_origin(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with open_broker(data, audit_log_id="amstelveen.nl/covenant-audit") as broker:
        broker.switch_theme("woninginbraak", True, NOW)
        key = audit_of(broker).verifier_key()
    assert key.startswith("amstelveen.nl/covenant-audit+")
    with open_broker(data, audit_log_id="amstelveen.nl/covenant-audit") as broker:
        assert audit_of(broker).verify().ok


def test_every_record_kind_carries_its_ldv_fields(template: Path) -> None:
    with open_broker(template) as broker:
        entries = [to_json(SCHEMA.decode(d)) for _, d in audit_of(broker).store.audit_entries()]
    kinds = {e["name"] for e in entries}
    assert kinds >= {"decide", "tombstone", "access", "quarantine", "control"}
    for entry in entries:
        assert re.fullmatch(r"[0-9a-f]{32}", entry["trace_id"])
        assert re.fullmatch(r"[0-9a-f]{16}", entry["span_id"])
        assert entry["covenant_id"] == "amstelveen-veiligheid"
        assert entry["covenant_version"] == 1
        assert entry["status"] == "OK"
        assert entry["start_time"] <= entry["end_time"]
        if entry["name"] in ("decide", "tombstone", "access"):
            assert entry["purpose"]
            assert entry["legal_basis"]
            assert entry["recipient"]
        if entry["name"] in ("decide", "tombstone"):
            assert entry["policy_hash"]
            assert entry["event_type"]
            assert entry["event_offset"] is not None
        if entry["decision"] in ("release", "expire") or entry["name"] == "access":
            assert entry["delivered_commitment"]
        if entry["name"] == "quarantine":
            assert entry["reason_code"]
            assert entry["delivered_commitment"]  # a keyed commitment to the raw input
    # the persons: every decision, tombstone and access about a BSN-identified event
    for entry in entries:
        if entry["event_type"] == "gemeente.boa_waarneming" or entry["name"] in (
                "quarantine", "control"):
            continue
        if entry["name"] == "access" and entry["purpose"] == "informatie-politie":
            continue
        assert entry["data_subjects"], entry["seq"]
        for subject in entry["data_subjects"]:
            assert re.fullmatch(r"[0-9a-f]{32}", subject["pseudonym"])
            assert subject["id_type"] == "bsn"
            assert subject["role"].endswith(".bsn")


def test_an_older_log_without_tree_or_indexes_is_derived_once(template: Path,
                                                              tmp_path: Path) -> None:
    log = copy_log(template, tmp_path / "data")
    with tampering(log) as db:
        for table in ("audit_node", "audit_index", "audit_subject"):
            db.execute(f"DELETE FROM {table}")
    report = verify(log)
    assert report.ok, report.problem
    code, out, _ = run(log, "--json", "audit", "query", "--recipient", "casusregisseur-dt")
    assert code == 0
    assert len(out.splitlines()) == 2  # the decision and the access


def query(data: Path, *args: str) -> list[dict[str, Any]]:
    code, out, err = run(data, "--json", "audit", "query", *args)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def test_query_filters_through_the_index(template: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def no_scan(*_: object) -> object:
        raise AssertionError("query must not scan the log")

    monkeypatch.setattr(SqliteAudit, "audit_entries", no_scan)
    noord = query(template, "--recipient", "boa-hor-noord")
    assert {e["recipient"] for e in noord} == {"boa-hor-noord"}
    assert [e["seq"] for e in noord] == sorted(e["seq"] for e in noord)
    assert {e["name"] for e in noord} == {"decide", "access", "tombstone"}
    withheld = query(template, "--decision", "withhold", "--purpose",
                     "surveillance-woninginbraak")
    assert len(withheld) == 12
    assert all(e["reason_code"] for e in withheld)
    bans = query(template, "--event-type", "om.gebiedsverbod", "--decision", "release")
    assert [e["recipient"] for e in bans] == ["boa-hor-noord", "boa-hor-oost",
                                              "interventieteam"]
    later = query(template, "--since", "2026-05-15T00:00:00Z")
    assert later
    assert all(e["start_time"] >= "2026-05-15" for e in later)
    earlier = query(template, "--until", "2026-05-15T00:00:00+02:00")
    assert len(earlier) + len(later) == 39
    assert query(template, "--action", "quarantine", "--limit", "1")[0]["reason_code"] == \
        "invalid_json"
    assert query(template, "--recipient", "nobody") == []


def test_query_as_table_and_csv(template: Path) -> None:
    code, out, _ = run(template, "audit", "query", "--purpose", "nazorg-detentie-terugkeer")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["seq", "start_time", "name", "decision", "recipient",
                                "purpose", "event_type", "reason_code"]
    assert "casusregisseur-dt" in lines[1]
    assert lines[-1] == "(2 entries)"
    code, out, _ = run(template, "audit", "query", "--csv", "--decision", "release",
                       "--recipient", "preventie")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 6
    assert {r["purpose"] for r in rows} == {"preventie-woninginbraak",
                                            "slachtoffer-preventieadvies"}
    assert all(r["legal_basis"] and r["fields_released"] for r in rows)
    code, _, err = run(template, "audit", "query", "--since", "yesterday")
    assert code == 2
    assert "not an ISO-8601 instant" in err


def test_verify_text_output_stays_compatible(template: Path) -> None:
    code, out, _ = run(template, "audit", "verify")
    assert code == 0
    assert out.startswith("audit log intact: 39 entries, head ")
    code, out, _ = run(template, "--json", "audit", "verify")
    payload = json.loads(out)
    assert {"ok", "entries", "head", "problem", "root", "checkpoints"} <= set(payload)
