"""`audit integrate` on a real Kafka: the audit partitions' chains sequenced into the
verifiable log, then verify, prove, verify-proof, subject-report and consistency on it, a
second pass that appends only what is new, and tampering of the integrated SQLite found."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from broker.audit.integrate import SOURCE_PARTITION, SOURCE_SEQ
from broker.audit.sqlite_integrated import DB_NAME
from tests import factories as f
from tests.integration.kafka_support import (
    REPO,
    KafkaEnv,
    jsonl,
    kafka_env,
    lines_file,
    run_cli,
    snapshot,
)

NOW = "2026-05-10T12:00:00Z"
VICTIM = "123456782"


def _cli(env: KafkaEnv, *argv: str, code: int = 0) -> str:
    got, out = run_cli([*env.args(), "--now", NOW, *argv])
    assert got == code, out
    return out


def _json(env: KafkaEnv, *argv: str, code: int = 0) -> dict[str, Any]:
    out = _cli(env, "--json", *argv, code=code)
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _events(env: KafkaEnv, path: Path, events: list[Any]) -> None:
    feed = lines_file(path, [*jsonl(events)])
    _cli(env, "ingest", "--source", "politie", "--type", "politie.woninginbraak", str(feed))
    stored = 0
    for _ in range(3):  # on a loaded machine, --until-idle can stop before the group joins
        stored += _json(env, "serve", "--until-idle")["stored"]
        if stored >= len(events):
            break
    assert stored == len(events), [
        (e["reason_code"], e["reason"]) for e in snapshot(env).entries("quarantine")]


def _committed(env: KafkaEnv) -> dict[int, int]:
    return {p: len(entries) for p, entries in snapshot(env).audit.items()}


def test_integrate_then_verify_prove_report_and_extend(kafka_bootstrap: str,
                                                      tmp_path: Path) -> None:
    with kafka_env(kafka_bootstrap, tmp_path / "kafka", partitions=2) as env:
        env.broker().close()  # creates the topics
        victim = f.woninginbraak()
        victim["victim"]["bsn"] = VICTIM
        _events(env, tmp_path / "one.jsonl", [
            victim, f.woninginbraak(address={"wijk": "west"}), f.woninginbraak()])
        _cli(env, "consume", "--recipient", "boa-hor-noord")  # an access entry (commands)
        committed = _committed(env)
        entries = sum(committed.values())
        assert entries > 4
        assert len(committed) == 3

        before = _json(env, "audit", "verify")  # nothing integrated yet: all pending
        assert before["ok"], before
        assert before["pending"] == entries
        assert before["integrated"]["entries"] == 0
        assert _json(env, "audit", "verify", "--require-signed", code=1)["problem"]

        first = _json(env, "audit", "integrate")
        assert first["integrated"] == first["size"] == first["checkpoint"] == entries, first
        assert first["partitions"] == {str(p): n for p, n in committed.items()}
        verify = _json(env, "audit", "verify", "--require-signed")
        assert verify["ok"], verify
        assert verify["pending"] == 0
        assert verify["entries"] == entries
        assert verify["integrated"]["entries"] == entries
        assert verify["integrated"]["signed_size"] == entries
        assert all(v["integrated"] == committed[int(p)]
                   for p, v in verify["partitions"].items())
        assert _json(env, "audit", "integrate")["integrated"] == 0  # nothing new

        # An inclusion proof, checked offline against the pinned key only.
        key = _json(env, "audit", "public-key")["verifier_key"]
        bundle = tmp_path / "entry.json"
        _cli(env, "audit", "prove", "--entry", str(entries - 1), "--out", str(bundle))
        proven = _json(env, "audit", "verify-proof", str(bundle), "--public-key", key)
        assert proven["ok"], proven
        assert proven["tree_size"] == entries
        source = proven["entry"]["detail"]
        assert int(source[SOURCE_PARTITION]) in committed
        assert int(source[SOURCE_SEQ]) < committed[int(source[SOURCE_PARTITION])]

        # The subject report finds the victim's release (prevention advice).
        report = _json(env, "audit", "subject-report", "--bsn", VICTIM)
        released = [i for i in report["disclosures"] if i["decision"] == "release"]
        assert released, report
        assert "preventie" in {i["recipient"] for i in released}
        rows = [json.loads(line) for line in _cli(
            env, "--json", "audit", "query", "--decision", "release").splitlines()]
        assert len(rows) == sum(1 for entries_ in snapshot(env).audit.values()
                                for e in entries_ if e["decision"] == "release")

        # More events: the second pass appends only those, and the checkpoints are
        # consistent.
        _events(env, tmp_path / "two.jsonl", [f.woninginbraak(), f.woninginbraak()])
        now_committed = sum(_committed(env).values())
        assert now_committed > entries
        pending = _json(env, "audit", "verify")
        assert pending["ok"]
        assert pending["pending"] == now_committed - entries
        second = _json(env, "audit", "integrate")
        assert second["integrated"] == now_committed - entries
        assert second["size"] == second["checkpoint"] == now_committed
        proof = tmp_path / "consistency.json"
        _cli(env, "audit", "consistency", str(entries), "latest", "--out", str(proof))
        consistent = _json(env, "audit", "verify-consistency", str(proof), "--public-key", key)
        assert consistent["ok"]
        assert consistent["old_size"] == entries
        assert consistent["new_size"] == now_committed
        assert _json(env, "audit", "verify")["ok"]

        # Someone with access to the data directory changes one integrated entry.
        db = sqlite3.connect(env.data_dir / DB_NAME, isolation_level=None)
        try:
            db.execute("DROP TRIGGER audit_no_update")
            entry = bytes(db.execute("SELECT entry FROM audit WHERE seq = 2").fetchone()[0])
            forged = entry[:40] + bytes([entry[40] ^ 1]) + entry[41:]  # in prev_hash
            db.execute("UPDATE audit SET entry = ? WHERE seq = 2", (forged,))
        finally:
            db.close()
        tampered = _json(env, "audit", "verify", code=1)
        assert not tampered["ok"]
        assert "entry 2" in tampered["problem"], tampered


def _wait_integrated(env: KafkaEnv, entries: int, timeout_s: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        verify = _json(env, "audit", "verify")
        if verify["integrated"]["entries"] == entries or time.monotonic() > deadline:
            return verify
        time.sleep(0.3)


def test_follow_sidecar_holds_the_lock_and_signs_at_shutdown(kafka_bootstrap: str,
                                                             tmp_path: Path) -> None:
    with kafka_env(kafka_bootstrap, tmp_path / "kafka", partitions=2) as env:
        env.broker().close()
        _events(env, tmp_path / "one.jsonl", [f.woninginbraak(), f.woninginbraak()])
        first = sum(_committed(env).values())
        argv = [sys.executable, "-m", "broker.cli", *env.args(), "--json", "audit",
                "integrate", "--follow", "--interval", "0.2"]
        sidecar = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        try:
            assert _wait_integrated(env, first)["integrated"]["entries"] == first
            # A second integrator on the same data directory is refused.
            second = subprocess.run(argv[:-3], cwd=REPO, capture_output=True, text=True,
                                    timeout=120, check=False)
            assert second.returncode == 2, second.stdout
            assert "another `audit integrate`" in second.stderr
            # It follows: new entries are integrated without a restart.
            _events(env, tmp_path / "two.jsonl", [f.woninginbraak()])
            total = sum(_committed(env).values())
            assert total > first
            verify = _wait_integrated(env, total)
            assert verify["ok"], verify
            assert verify["pending"] == 0
        finally:
            sidecar.send_signal(signal.SIGTERM)
            out, err = sidecar.communicate(timeout=60)
        assert sidecar.returncode == 0, err[-2000:]
        report = json.loads(out.strip().splitlines()[-1])
        assert report["size"] == report["checkpoint"] == total
        assert report["passes"] >= 2
        assert _json(env, "audit", "verify", "--require-signed")["ok"]
