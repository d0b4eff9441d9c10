"""Key files and files with personal data (issue 15 items 2, 6 and 13).

A key is made only where nothing depends on it yet; a missing or replaced key is refused
(exit 2) with what depends on it and how to restore it; an erasure that finds no key for
what the audit says was released exits 1. One file rule (owner only, 0600 / 0700) holds for
every secret and personal-data file, and files the broker writes are created so. Creating
keys is atomic: concurrent first use on one data dir ends with one key in every process.
"""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.queues
import multiprocessing.synchronize
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from broker.audit.checkpoint import load_or_create_signing_key
from broker.audit.sequencer import AuditSequencer
from broker.audit.sqlite_integrated import IntegratedAuditDb
from broker.errors import KeyFileError, UnsafeFileError
from broker.keys import (
    CORE_KEYS,
    KeyStore,
    create_private,
    new_signing_pem,
    private_db,
    private_dir,
    write_private,
)
from broker.model.schemas import SchemaRegistry
from broker.web.state import WebState
from tests import factories as f

NOW = "2026-05-10T12:00:00Z"
REPO = Path(__file__).resolve().parents[2]
BSN = "246813579"


def run(*args: str | Path, data: Path, stdin: bytes | None = None
        ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVENANT_BROKER_")}
    return subprocess.run(
        [sys.executable, "-m", "broker.cli", "--data-dir", str(data), "--now", NOW,
         *map(str, args)], input=stdin.decode() if stdin else None, capture_output=True,
        text=True, check=False, cwd=REPO, env=env, timeout=120)


@pytest.fixture
def used(tmp_path: Path) -> Path:
    """A data dir holding one released burglary about BSN (sealed, pseudonymised, audited)."""
    data = tmp_path / "data"
    victim = {"name": "KEY-CANARY-NAAM", "bsn": BSN, "consent_prevention_advice": True}
    done = run("ingest", "--source", "politie", "--type", "politie.woninginbraak", "-",
               data=data, stdin=f.jsonl(f.woninginbraak(victim=victim)))
    assert done.returncode == 0, done.stderr
    return data


def _erase(data: Path) -> subprocess.CompletedProcess[str]:
    return run("subject", "erase", "--bsn", BSN, "--reason", "AVG art. 17 verzoek", data=data)


# --------------------------------------------------------------------------------------
# Item 2: a missing or replaced key is refused, never regenerated
# --------------------------------------------------------------------------------------


def test_a_deleted_subject_key_is_refused_not_regenerated(used: Path) -> None:
    (used / "keys" / "subject.key").unlink()
    erased = _erase(used)
    # Before: exit 0, "no data keys left for this person", under a new subject key.
    assert erased.returncode == 2, erased.stdout
    message = erased.stderr
    assert "subject.key: key file is missing" in message
    assert "subject pseudonyms in sealed events" in message
    assert "Restore subject.key from the backup" in message
    assert not (used / "keys" / "subject.key").exists()  # nothing was made in its place
    assert run("consume", "--recipient", "preventie", data=used).returncode == 2


@pytest.mark.parametrize("name", ["kek.key", "subject.key", "commitment.key",
                                  "checkpoint-signing.pem"])
def test_a_missing_key_is_refused_even_when_the_manifest_went_with_it(used: Path,
                                                                      name: str) -> None:
    (used / "keys" / "manifest.json").unlink()
    (used / "keys" / name).unlink()
    done = run("consume", "--recipient", "preventie", data=used)
    assert done.returncode == 2, done.stdout  # before: a new key, silently
    assert f"{name}: key file is missing, but this data dir already holds broker.db" \
        in done.stderr
    assert not (used / "keys" / name).exists()


def test_a_missing_pseudonym_key_is_refused(used: Path) -> None:
    key = used / "keys" / "pseudonym.surveillance-woninginbraak.key"
    key.unlink()
    done = run("consume", "--recipient", "boa-hor-noord", data=used)
    assert done.returncode == 2, done.stdout
    assert "pseudonymised refs delivered for purpose 'surveillance-woninginbraak'" \
        in done.stderr
    assert not key.exists()


def _other_key(name: str) -> bytes:
    return new_signing_pem() if name.endswith(".pem") else os.urandom(32)


@pytest.mark.parametrize("name", ["kek.key", "subject.key",
                                  "pseudonym.surveillance-woninginbraak.key",
                                  "checkpoint-signing.pem"])
def test_a_replaced_key_is_refused_and_left_as_found(used: Path, name: str) -> None:
    path = used / "keys" / name
    path.unlink()
    assert create_private(path, other := _other_key(name))
    done = run("consume", "--recipient", "boa-hor-noord", data=used)
    assert done.returncode == 2, done.stdout
    assert f"{name}: holds another key" in done.stderr
    assert "Put the original" in done.stderr
    assert path.read_bytes() == other


def test_a_fresh_data_dir_records_each_key_by_id_never_by_value(used: Path) -> None:
    manifest = json.loads((used / "keys" / "manifest.json").read_text())
    assert set(CORE_KEYS) <= set(manifest["keys"])
    text = (used / "keys" / "manifest.json").read_text()
    for key in (used / "keys").glob("*.key"):
        assert key.read_bytes().hex() not in text
        assert manifest["keys"][key.stem]["file"] == key.name
    pem = (used / "keys" / "checkpoint-signing.pem").read_bytes()
    assert b"PRIVATE" not in text.encode()
    assert pem.decode() not in text


def test_an_erasure_that_finds_no_key_for_released_data_exits_1(used: Path) -> None:
    with sqlite3.connect(used / "keystore.db") as db:  # the data keys lost (an old backup)
        assert db.execute("DELETE FROM data_keys").rowcount > 0
    erased = _erase(used)
    # Before: exit 0, "no data keys left for this person (already erased or never stored)".
    assert erased.returncode == 1, erased.stderr
    assert "releases recorded, 0 keys destroyed" in erased.stdout
    assert "erasure INCOMPLETE" in erased.stdout
    as_json = run("--json", "subject", "erase", "--bsn", BSN, "--reason", "r", data=used)
    # The notices of the first run closed the releases: nothing open is left to report.
    assert as_json.returncode == 0, as_json.stdout
    assert json.loads(as_json.stdout)["keys_missing"] is False


def test_erasing_a_person_twice_is_not_an_incident(used: Path) -> None:
    first, again = _erase(used), _erase(used)
    assert first.returncode == 0, first.stdout
    assert "erased: 1 data keys destroyed" in first.stdout
    assert again.returncode == 0, again.stdout
    assert "no data keys left for this person" in again.stdout


# --------------------------------------------------------------------------------------
# Item 6: one file rule for secrets and personal data
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "mode"), [
    ("keys/checkpoint-signing.pem", 0o644), ("keys/kek.key", 0o640),
    ("keys/subject.key", 0o604), ("keys/pseudonym.informatie-politie.key", 0o644),
    ("keys", 0o755), ("broker.db", 0o644), ("keystore.db", 0o640),
])
def test_a_loose_mode_is_refused_naming_the_file_and_the_fix(used: Path, target: str,
                                                             mode: int) -> None:
    path = used / target if target != "." else used
    path.chmod(mode)
    done = run("consume", "--recipient", "boa-hor-noord", data=used)
    want = 0o700 if path.is_dir() else 0o600
    assert done.returncode == 2, done.stdout  # before: signing key, dirs and dbs passed
    assert f"{path}: " in done.stderr
    assert f"has mode {mode:04o}" in done.stderr
    assert f"(chmod {want:o} {path})" in done.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="handing a file to another user needs root")
def test_a_key_owned_by_another_user_is_refused(used: Path) -> None:
    path = used / "keys" / "kek.key"
    os.chown(path, 4242, -1)
    done = run("consume", "--recipient", "boa-hor-noord", data=used)
    assert done.returncode == 2
    assert f"{path}: owned by uid 4242" in done.stderr


def test_subject_report_files_are_written_0600(used: Path, tmp_path: Path) -> None:
    html, out = tmp_path / "report.html", tmp_path / "report.json"
    out.write_text("an earlier, world-readable report\n")
    out.chmod(0o644)
    done = run("audit", "subject-report", "--bsn", BSN, "--html", html, "--out", out,
               data=used)
    assert done.returncode == 0, done.stderr
    for path in (html, out):  # before: 0644, though they hold one person's disclosures
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(out.read_text())["summary"]["disclosures"] >= 1
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)  # the most permissive umask must not widen any mode
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("open_umask")
def test_every_file_the_broker_writes_is_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    data = tmp_path / "data"
    done = run("ingest", "--source", "politie", "--type", "politie.woninginbraak", "-",
               data=data, stdin=f.jsonl(f.woninginbraak()))
    assert done.returncode == 0, done.stderr
    WebState(data)
    registry = SchemaRegistry(REPO / "schemas")
    IntegratedAuditDb(data, AuditSequencer(registry.get("records.audit_entry"),
                                           origin="t")).close()
    write_private(data / "report.json", b"{}")
    with sqlite3.connect(data / "broker.db") as db:  # leaves -wal and -shm beside it
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS t (x)")
        assert (data / "broker.db-wal").exists()
        for path in [data, *data.rglob("*")]:
            want = 0o700 if path.is_dir() else 0o600
            assert stat.S_IMODE(path.stat().st_mode) == want, path


def test_private_db_refuses_a_loose_wal(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    private_db(path)
    wal = path.with_name("x.db-wal")
    wal.touch(mode=0o644)
    wal.chmod(0o644)
    with pytest.raises(UnsafeFileError, match=r"x\.db-wal: file has mode 0644"):
        private_db(path)


# --------------------------------------------------------------------------------------
# Item 13: atomic key creation, one key under concurrent first use
# --------------------------------------------------------------------------------------


def _first_use(keys_dir: str, barrier: multiprocessing.synchronize.Barrier,
               results: multiprocessing.queues.Queue[tuple[str, bytes, bytes]]) -> None:
    barrier.wait()
    try:
        store = KeyStore(Path(keys_dir))
        secret = store.secret("subject")
        signing = load_or_create_signing_key(store.signing_key_path)
        public = signing.public_key().public_bytes(serialization.Encoding.Raw,
                                                   serialization.PublicFormat.Raw)
        results.put(("ok", secret, public))
    except Exception as exc:  # noqa: BLE001 - any failure is reported to the test
        results.put((f"{type(exc).__name__}: {exc}", b"", b""))


@pytest.mark.parametrize("round_", range(4))
def test_concurrent_first_use_ends_with_one_key_that_every_process_uses(
        tmp_path: Path, round_: int) -> None:
    processes = 8
    ctx = multiprocessing.get_context("fork")
    keys_dir = tmp_path / f"round{round_}" / "keys"
    keys_dir.mkdir(parents=True, mode=0o700)
    barrier = ctx.Barrier(processes)
    results: multiprocessing.queues.Queue[tuple[str, bytes, bytes]] = ctx.Queue()
    workers = [ctx.Process(target=_first_use, args=(str(keys_dir), barrier, results))
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    # Before: "holds 0 bytes" / "not an unencrypted PEM private key" from a half-written key.
    assert [o[0] for o in outcomes] == ["ok"] * processes
    assert len({o[1] for o in outcomes}) == 1
    assert len({o[2] for o in outcomes}) == 1
    assert (keys_dir / "subject.key").read_bytes() == outcomes[0][1]
    assert sorted(p.name for p in keys_dir.iterdir()) == [
        ".lock", "checkpoint-signing.pem", "manifest.json", "subject.key"]


def test_concurrent_broker_starts_on_a_fresh_data_dir_share_one_key_set(tmp_path: Path) -> None:
    data = tmp_path / "data"
    feed = f.jsonl(f.woninginbraak())
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVENANT_BROKER_")}
    procs = [subprocess.Popen(
        [sys.executable, "-m", "broker.cli", "--data-dir", str(data), "--now", NOW, "ingest",
         "--source", "politie", "--type", "politie.woninginbraak", "-"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
        env=env) for _ in range(4)]
    outcomes = [p.communicate(feed, timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err.decode() for _, err in outcomes]
    manifest = json.loads((data / "keys" / "manifest.json").read_text())["keys"]
    store = KeyStore(data / "keys", [data / "broker.db"])
    store.initialise()  # every key on disk is the one recorded
    assert set(CORE_KEYS) <= set(manifest)
    done = run("audit", "verify", data=data)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_key_is_never_overwritten_and_no_temporary_file_stays(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    assert create_private(path, b"first")
    assert not create_private(path, b"second")
    assert path.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["k.key"]


def test_a_core_key_is_not_made_beside_existing_data(tmp_path: Path) -> None:
    (tmp_path / "broker.db").touch(mode=0o600)
    store = KeyStore(tmp_path / "keys", [tmp_path / "broker.db"])
    with pytest.raises(KeyFileError, match=r"already holds broker\.db"):
        store.initialise()
    assert not (tmp_path / "keys" / "kek.key").exists()


def test_a_dangling_link_in_a_keys_place_is_refused_and_nothing_is_made_through_it(
        tmp_path: Path) -> None:
    keys, target = tmp_path / "keys", tmp_path / "elsewhere.key"
    keys.mkdir(mode=0o700)
    (keys / "subject.key").symlink_to(target)
    with pytest.raises(KeyFileError, match="a link to a file that does not exist"):
        KeyStore(keys).subject_key()
    assert not target.exists()


def test_a_data_dir_open_to_others_is_closed_at_start_its_contents_still_checked(
        used: Path) -> None:
    """`mkdir data` (0755 under the usual umask) or a copied data dir: the broker closes
    the directory itself to 0700 rather than refusing to run; every file and keys/ in it
    are still held to the rule (the cases above)."""
    used.chmod(0o750)
    done = run("consume", "--recipient", "boa-hor-noord", data=used)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(used.stat().st_mode) == 0o700
    fresh = used.parent / "fresh"
    fresh.mkdir(mode=0o755)
    fresh.chmod(0o755)
    assert private_dir(fresh, close_if_open=True) is True
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
    other = used.parent / "other"
    other.mkdir(mode=0o755)
    other.chmod(0o755)
    with pytest.raises(UnsafeFileError, match="chmod 700"):
        private_dir(other)  # any other private directory stays refused
