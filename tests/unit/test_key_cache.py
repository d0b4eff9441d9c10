"""The cache of unwrapped data keys (issue 14, item 2): bounded by `data_key_cache`, least
recently used evicted first, keys not yet durable never evicted, and a destroyed key never
handed back."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest

from broker.app.service import Broker
from broker.crypto.kek import FileKek
from broker.crypto.keystore import KeyCache, SqliteKeyStore

DAY = date(2027, 5, 10)


def test_the_least_recently_used_key_goes_first() -> None:
    cache = KeyCache(2)
    cache.put("a", b"A")
    cache.put("b", b"B")
    assert cache.get("a") == b"A"  # used: "b" is now the least recent
    cache.put("c", b"C")
    assert "b" not in cache
    assert (cache.get("a"), cache.get("c")) == (b"A", b"C")
    assert len(cache) == 2


def test_a_key_not_yet_durable_outlives_the_bound_until_it_is() -> None:
    cache = KeyCache(1)
    cache.pin("new", b"N")  # evicting it would read as destroyed: no store has it yet
    cache.put("a", b"A")
    cache.put("b", b"B")
    cache.clear()  # another writer changed the store: only durable keys are forgotten
    assert cache.get("new") == b"N"
    cache.unpin(["new"])
    cache.put("c", b"C")
    assert "new" not in cache


def test_the_bound_must_hold_a_key() -> None:
    with pytest.raises(ValueError, match="at least one key"):
        KeyCache(0)


def _wrapped_rows(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT COUNT(*) FROM data_keys").fetchone()[0])
    finally:
        db.close()


def test_the_store_keeps_at_most_its_bound_and_reads_evicted_keys_back(
        make_broker: Callable[..., Broker], tmp_path: Path) -> None:
    broker = make_broker()
    store = SqliteKeyStore(tmp_path / "keys.db", FileKek(broker.keys), cache_limit=3)
    try:
        made = [store.data_key(f"bsn:s{i}", DAY, 1) for i in range(10)]
        assert len(store._cache) == 10  # none durable yet: all pinned
        store.flush()
        assert len(store._cache) == 3
        assert _wrapped_rows(tmp_path / "keys.db") == 10
        for key_id, key in made:  # evicted ones are unwrapped again from the store
            assert store.lookup(key_id) == key
        assert len(store._cache) == 3
    finally:
        store.close()


def test_an_erased_subjects_key_is_not_handed_back(make_broker: Callable[..., Broker],
                                                  tmp_path: Path) -> None:
    broker = make_broker(data_key_cache=5)
    keys = broker.data_keys
    assert isinstance(keys, SqliteKeyStore)
    assert keys._cache.limit == 5  # the setting reaches the store
    key_id, key = keys.data_key("bsn:erased", DAY, 2)
    other_id, other = keys.data_key("bsn:kept", DAY, 1)
    keys.flush()
    assert keys.lookup(key_id) == key
    keys.destroy_subject("bsn:erased")
    assert key_id not in keys._cache
    assert keys.lookup(key_id) is None
    assert keys.lookup(other_id) == other
    new_id, new_key = keys.data_key("bsn:erased", DAY, 1)  # a new event of the subject
    assert new_id != key_id
    assert new_key != key


def test_a_new_subjects_key_is_looked_up_by_subject_not_by_scanning_its_day(
        make_broker: Callable[..., Broker], tmp_path: Path) -> None:
    """Every new subject sealed asks the store for a key of (subject, date); a day's keys
    share one date, so a plan through the retention index scans all of them (a look-up
    cost growing with the store: 370 µs per new subject at 5000 keys)."""
    broker = make_broker()
    store = SqliteKeyStore(tmp_path / "keys.db", FileKek(broker.keys))
    try:
        for i in range(50):
            store.data_key(f"bsn:s{i}", DAY, 1)
        store.flush()
        plan = " ".join(str(row[3]) for row in store.db.execute(
            "EXPLAIN QUERY PLAN " + store._EXISTING, ("bsn:new", DAY.isoformat())))
        assert "data_keys_subject_date (subject=? AND retention_until=?)" in plan, plan
        assert "TEMP B-TREE" not in plan, plan
    finally:
        store.close()


def test_a_key_another_process_destroyed_is_not_used_once_the_pipeline_is_taken(
        make_broker: Callable[..., Broker], tmp_path: Path) -> None:
    """Another process's `subject erase` ran between two steps of this one (a `web` process
    ingesting). The cache is checked against the file at most every 0.5 s; before the
    pipeline lock revalidated it, a step taken within that window sealed the subject's new
    event under the destroyed key (its wrapped copy gone: unreadable once evicted) and
    could open the subject's erased events from the cache."""
    broker = make_broker()
    keys = broker.data_keys
    assert isinstance(keys, SqliteKeyStore)
    key_id, _ = keys.data_key("bsn:erased", DAY, 1)
    keys.flush()
    assert keys.lookup(key_id) is not None  # cached, and the file just checked
    elsewhere = SqliteKeyStore(keys.path, FileKek(broker.keys))  # the other process's store
    try:
        assert [k.key_id for k in elsewhere.destroy_subject("bsn:erased")] == [key_id]
    finally:
        elsewhere.close()
    with broker.exclusive():
        assert keys.lookup(key_id) is None
        new_id, _ = keys.data_key("bsn:erased", DAY, 1)
    assert new_id != key_id
