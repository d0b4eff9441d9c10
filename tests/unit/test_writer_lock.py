"""One pipeline writer at a time on an embedded data directory
(broker/backends/embedded/writer_lock.py, `Backend.exclusive`, `one_writer` in the app).

Before it, `ingest` commands run at once on one data directory read before they wrote in
separate transactions: the same event was stored twice (the second process refused by the
unique index: "UNIQUE constraint failed: store.event_type, store.event_id", exit 2) or the
same offsets decided twice ("consumer decide already committed position 0; refusing to
decide offset 0 twice", exit 2)."""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.process
import multiprocessing.synchronize
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.backends.embedded.writer_lock import LOCK_NAME, WriterLock
from broker.errors import TransientBackendError
from tests import factories as f

REPO = Path(__file__).resolve().parents[2]
NOW = "2026-05-10T12:00:00Z"


def _hold_in_child(data: Path, journal: Path, held: multiprocessing.synchronize.Event,
                   go: multiprocessing.synchronize.Event) -> None:
    with WriterLock(data).hold():
        with journal.open("a") as out:
            out.write("child holds\n")
        held.set()
        go.wait(30)
        with journal.open("a") as out:
            out.write("child lets go\n")


Holding = tuple[multiprocessing.process.BaseProcess, multiprocessing.synchronize.Event, Path]


@pytest.fixture
def child_holding(tmp_path: Path) -> Iterator[Holding]:
    """A process holding the lock until the test sets `go`."""
    ctx = multiprocessing.get_context("spawn")
    held, go = ctx.Event(), ctx.Event()
    journal = tmp_path / "journal"
    child = ctx.Process(target=_hold_in_child, args=(tmp_path, journal, held, go))
    child.start()
    assert held.wait(60), "the child never took the lock"
    yield child, go, journal
    go.set()
    child.join(60)


def test_a_second_process_waits_for_the_first_to_let_go(child_holding: Holding,
                                                        tmp_path: Path) -> None:
    _, go, journal = child_holding
    threading.Timer(0.3, go.set).start()
    with WriterLock(tmp_path).hold(), journal.open("a") as out:
        out.write("parent holds\n")
    assert journal.read_text().splitlines() == ["child holds", "child lets go", "parent holds"]


def test_a_wait_past_its_limit_names_the_holding_process(child_holding: Holding,
                                                        tmp_path: Path) -> None:
    child, _, _ = child_holding
    with pytest.raises(TransientBackendError, match=rf"process {child.pid} has held"), \
            WriterLock(tmp_path, wait_s=0.2).hold():
        pass


def test_the_lock_is_reentrant_and_let_go_only_by_the_outermost_hold(tmp_path: Path) -> None:
    lock = WriterLock(tmp_path)
    with lock.hold(), lock.hold():
        assert _held_as_seen_from_another_process(tmp_path)
    assert not _held_as_seen_from_another_process(tmp_path)
    assert (tmp_path / LOCK_NAME).read_text() == str(os.getpid())
    assert (tmp_path / LOCK_NAME).stat().st_mode & 0o777 == 0o600


def test_on_acquire_runs_at_each_outermost_hold_and_a_failure_lets_go(tmp_path: Path) -> None:
    calls: list[int] = []
    lock = WriterLock(tmp_path, on_acquire=lambda: calls.append(1))
    with lock.hold(), lock.hold():
        pass
    with lock.hold():
        pass
    assert len(calls) == 2

    def fails() -> None:
        raise RuntimeError("revalidation failed")

    with pytest.raises(RuntimeError, match="revalidation failed"), \
            WriterLock(tmp_path, on_acquire=fails).hold():
        pass
    assert not _held_as_seen_from_another_process(tmp_path)


def test_threads_of_one_process_take_turns(tmp_path: Path) -> None:
    """The hold depth and the open lock file are the process's: without the thread lock a
    second thread would see a depth above 0 and go in beside the first."""
    lock, inside, most = WriterLock(tmp_path), [0], [0]

    def step() -> None:
        for _ in range(20):
            with lock.hold():
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                time.sleep(0.001)
                inside[0] -= 1

    threads = [threading.Thread(target=step) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert most[0] == 1


def _held_as_seen_from_another_process(data: Path) -> bool:
    """Whether the lock is held: another process cannot take it now (if it can, it lets go)."""
    code = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR)\n"
            "try: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
            "except BlockingIOError: sys.exit(1)\n")
    done = subprocess.run([sys.executable, "-c", code, str(data / LOCK_NAME)], check=False)
    return done.returncode == 1


# -- the commands ---------------------------------------------------------------------------

def _cli(data: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "broker.cli", "--data-dir", str(data), "--now", NOW, *args]


def _ingest_all(data: Path, feeds: list[bytes], together: bool) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVENANT_BROKER_")}
    cmd = _cli(data, "ingest", "--source", "politie", "--type", "politie.woninginbraak", "-")
    if not together:  # one after another: the outcome the concurrent run must equal
        for feed in feeds:
            done = subprocess.run(cmd, input=feed, capture_output=True, cwd=REPO, env=env,
                                  check=False, timeout=120)
            assert done.returncode == 0, done.stderr.decode()
        return
    # Each reads a file of its own, so all run at once (through pipes written one after
    # another, each would wait for its input until the one before had finished).
    paths = [data.parent / f"{data.name}-feed-{i}.jsonl" for i in range(len(feeds))]
    for path, feed in zip(paths, feeds, strict=True):
        path.write_bytes(feed)
    procs = [subprocess.Popen([*cmd[:-1], str(path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, cwd=REPO, env=env) for path in paths]
    outcomes = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0] * len(feeds), [e.decode() for _, e in outcomes]


def _counts(data: Path) -> dict[str, object]:
    db = sqlite3.connect(f"file:{data / 'broker.db'}?mode=ro", uri=True)
    try:
        return {
            "stored": sorted(r[0] for r in db.execute("SELECT event_id FROM store")),
            "streams": sorted(db.execute(
                "SELECT recipient, purpose, kind, COUNT(*) FROM egress "
                "GROUP BY recipient, purpose, kind")),
            "decided offsets": db.execute(
                "SELECT COUNT(DISTINCT event_offset), COUNT(*) FROM egress").fetchone(),
            "position": db.execute("SELECT position FROM positions WHERE consumer = 'decide'"
                                   ).fetchone(),
        }
    finally:
        db.close()


def test_concurrent_ingests_store_and_decide_each_event_once(tmp_path: Path) -> None:
    shared = [f.woninginbraak() for _ in range(5)]  # every process sends these
    feeds = [f.jsonl(*shared, *(f.woninginbraak() for _ in range(3))) for _ in range(6)]
    together, apart = tmp_path / "together", tmp_path / "apart"
    _ingest_all(apart, feeds, together=False)
    _ingest_all(together, feeds, together=True)
    expected, got = _counts(apart), _counts(together)
    assert len(expected["stored"]) == 5 + 6 * 3  # type: ignore[arg-type]
    assert got["stored"] == expected["stored"]
    assert got["streams"] == expected["streams"]
    assert got["decided offsets"] == expected["decided offsets"]
    assert got["position"] == expected["position"]
    verify = subprocess.run(_cli(together, "audit", "verify"), capture_output=True, text=True,
                            cwd=REPO, check=False, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_concurrent_key_rotations_take_one_version_each(tmp_path: Path) -> None:
    """A rotation reads the latest key version and writes the next: before the lock, two
    at once could both write version 2."""
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVENANT_BROKER_")}
    first = subprocess.run(_cli(data, "audit", "verify"), capture_output=True, cwd=REPO,
                           env=env, check=False, timeout=120)  # makes the data dir
    assert first.returncode == 0, first.stderr.decode()
    procs = [subprocess.Popen(_cli(data, "keys", "rotate", "--purpose", "informatie-politie",
                                   "--json"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              cwd=REPO, env=env) for _ in range(5)]
    outcomes = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0] * 5, [e.decode() for _, e in outcomes]
    versions = sorted(json.loads(out)["key_version"] for out, _ in outcomes)
    assert versions == [2, 3, 4, 5, 6]
