"""Data keys on the embedded backend: a small SQLite database of wrapped keys.

A data key exists per (data subject, retention date). Destroying it (erasure or the end
of retention) deletes its row with secure_delete on and truncates the WAL, so no copy of
the wrapped key stays in the files.

Key ids are unique per created key (broker/crypto/key_ids.py), so two writers that
create a key for the same subject and date at once each keep their own row; neither
overwrites what the other sealed. A writer that finds a stored key for (subject, date)
reuses it; destroying by subject or by retention date removes every key of it. Ids of
the older form ``<subject>|<date>`` still open.

With the key gone, every field sealed under it is unrecoverable, while the immutable
store and the audit log stay intact and verifiable. The Kafka backend keeps its keys in
a compacted topic instead (broker/backends/kafka/keys.py).
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Protocol

from broker.crypto.kek import KeyEncryptionKey
from broker.crypto.key_ids import new_key_id
from broker.crypto.sealing import DataKeys
from broker.errors import StorageError
from broker.keys import private_db
from broker.sqlite_wal import open_wal

_SCHEMA = """
CREATE TABLE IF NOT EXISTS data_keys (
    key_id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    retention_until TEXT NOT NULL,
    wrapped BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    fields_sealed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS data_keys_subject ON data_keys (subject);
CREATE INDEX IF NOT EXISTS data_keys_retention ON data_keys (retention_until);
-- The look-up of a (subject, date)'s key, done for every new subject sealed: without it the
-- planner took the retention index, and a day's keys all share one date, so each look-up
-- scanned every key of the day (370 µs per new subject at 5000 keys, growing with them).
CREATE INDEX IF NOT EXISTS data_keys_subject_date
    ON data_keys (subject, retention_until, created_ms, key_id);
"""


DEFAULT_CACHE_LIMIT = 20_000  # unwrapped keys kept in memory (about 3 MB), besides unflushed ones


class KeyCache:
    """Unwrapped data keys in memory: at most `limit`, the least recently used evicted
    first, besides the pinned ones (created here and not yet durable: evicting one would
    read as destroyed, since no store has it yet). A destroyed key is dropped at once, so
    the cache never hands it back. One thread."""

    def __init__(self, limit: int = DEFAULT_CACHE_LIMIT) -> None:
        if limit < 1:
            raise ValueError(f"the data key cache holds at least one key, not {limit}")
        self.limit = limit
        self._lru: OrderedDict[str, bytes] = OrderedDict()
        self._pinned: dict[str, bytes] = {}

    def __len__(self) -> int:
        return len(self._lru) + len(self._pinned)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._pinned or key_id in self._lru

    def get(self, key_id: str) -> bytes | None:
        key = self._pinned.get(key_id)
        if key is not None:
            return key
        key = self._lru.get(key_id)
        if key is not None:
            self._lru.move_to_end(key_id)
        return key

    def put(self, key_id: str, key: bytes) -> None:
        if key_id in self._pinned:
            self._pinned[key_id] = key
            return
        self._lru[key_id] = key
        self._lru.move_to_end(key_id)
        while len(self._lru) > self.limit:  # a long replay touches every key once
            self._lru.popitem(last=False)

    def pin(self, key_id: str, key: bytes) -> None:
        """A key created here: kept until `unpin` (it is durable), whatever the bound."""
        self._lru.pop(key_id, None)
        self._pinned[key_id] = key

    def unpin(self, key_ids: Iterable[str]) -> None:
        for key_id in key_ids:
            key = self._pinned.pop(key_id, None)
            if key is not None:
                self.put(key_id, key)

    def drop(self, key_id: str) -> None:
        self._lru.pop(key_id, None)
        self._pinned.pop(key_id, None)

    def clear(self) -> None:
        """Forget every durable key (another writer may have destroyed some); the pinned
        ones stay, no store has them yet."""
        self._lru.clear()


@dataclass(frozen=True)
class DestroyedKey:
    key_id: str
    subject: str
    retention_until: date
    fields_sealed: int | None  # None where the store does not count them (Kafka)


def fields_sealed(destroyed: list[DestroyedKey]) -> int | None:
    """How many sealed fields the destroyed keys made unrecoverable; None when unknown."""
    counts = [k.fields_sealed for k in destroyed]
    return None if None in counts else sum(c for c in counts if c is not None)


def fields_detail(destroyed: list[DestroyedKey]) -> dict[str, str]:
    """The audit detail of a key destruction: the field count where it is known."""
    count = fields_sealed(destroyed)
    return {} if count is None else {"fields": str(count)}


class DataKeyStore(DataKeys, Protocol):
    """A key store as the broker uses it: SqliteKeyStore, or KafkaKeyStore on Kafka."""

    def destroy_subject(self, subject: str) -> list[DestroyedKey]: ...

    def destroy_expired(self, today: date) -> list[DestroyedKey]: ...

    def close(self) -> None: ...


_STALE_CHECK_S = 0.5  # how often a cached key is checked against other writers' deletes


class SqliteKeyStore:
    def __init__(self, path: Path, kek: KeyEncryptionKey,
                 cache_limit: int = DEFAULT_CACHE_LIMIT) -> None:
        self.path = path
        self.kek = kek
        self._cache = KeyCache(cache_limit)
        self._current: dict[tuple[str, date], str] = {}  # (subject, date) -> key id in use
        self._new: dict[str, tuple[str, date, bytes]] = {}
        self._counts: dict[str, int] = {}
        self._data_version = -1
        self._checked_at = 0.0
        private_db(path)  # wrapped keys: owner only, 0600 from the start
        try:
            self.db = open_wal(path, secure_delete=True)
            self.db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StorageError(f"{path}: {exc}") from exc

    def close(self) -> None:
        self.flush()
        self.db.close()

    def data_key(self, subject: str, retention_until: date, fields: int) -> tuple[str, bytes]:
        """The key for (subject, retention date), created on first use.

        New keys and the sealed-field counts are buffered; `flush()` writes them in one
        transaction and must run before anything sealed under them is committed.
        """
        found = self._current.get((subject, retention_until))
        key = self.lookup(found) if found is not None else None
        if found is None or key is None:
            found, key = self._existing(subject, retention_until)
        if found is None or key is None:
            found, key = new_key_id(subject, retention_until), secrets.token_bytes(32)
            self._new[found] = (subject, retention_until, self.kek.wrap(key, found))
            self._cache.pin(found, key)
        if len(self._current) >= self._cache.limit and \
                (subject, retention_until) not in self._current:
            self._current = {sd: k for sd, k in self._current.items() if k in self._new}
        self._current[(subject, retention_until)] = found
        self._counts[found] = self._counts.get(found, 0) + fields
        return found, key

    _EXISTING = ("SELECT key_id, wrapped FROM data_keys WHERE subject = ? AND "
                 "retention_until = ? ORDER BY created_ms, key_id LIMIT 1")

    def _existing(self, subject: str, retention_until: date) -> tuple[str | None, bytes | None]:
        """A stored key of (subject, date), any writer's; the oldest when there are several."""
        try:
            row = self.db.execute(
                self._EXISTING,
                (subject, retention_until.isoformat())).fetchone()
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: {exc}") from exc
        if row is None:
            return None, None
        key_id = str(row[0])
        key = self.kek.unwrap(bytes(row[1]), key_id)
        self._remember(key_id, key)
        return key_id, key

    def flush(self) -> None:
        if not self._new and not self._counts:
            return
        now_ms = int(time.time() * 1000)
        # A new key is inserted with its count (one row write, not an insert and an
        # update); a key that exists already (this or another writer's) gains the count.
        # New ids are random, so an insert never meets another writer's row.
        counts = dict(self._counts)
        try:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany(
                "INSERT INTO data_keys (key_id, subject, retention_until, wrapped, "
                "created_ms, fields_sealed) VALUES (?, ?, ?, ?, ?, ?)",
                [(k, s, r.isoformat(), w, now_ms, counts.pop(k, 0))
                 for k, (s, r, w) in self._new.items()])
            self.db.executemany(
                "UPDATE data_keys SET fields_sealed = fields_sealed + ? WHERE key_id = ?",
                [(n, k) for k, n in counts.items()])
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: {exc}") from exc
        self._cache.unpin(self._new)  # durable now: under the bound like any other
        self._new.clear()
        self._counts.clear()

    def lookup(self, key_id: str) -> bytes | None:
        self._drop_stale()
        cached = self._cache.get(key_id)
        if cached is not None:
            return cached
        try:
            row = self.db.execute("SELECT wrapped FROM data_keys WHERE key_id = ?",
                                  (key_id,)).fetchone()
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: {exc}") from exc
        if row is None:
            return None
        key = self.kek.unwrap(bytes(row[0]), key_id)
        self._remember(key_id, key)
        return key

    def _remember(self, key_id: str, key: bytes) -> None:
        self._cache.put(key_id, key)

    def revalidate(self) -> None:
        """Check the cached keys against the file at the next use, however recent the last
        check: called when this process takes the data directory's pipeline
        (broker/backends/embedded/writer_lock.py), since the step before it may have been
        another process's erasure. A key it destroyed must not seal or open anything here."""
        self._checked_at = float("-inf")

    def _drop_stale(self) -> None:
        """Forget cached keys when another connection changed the file (it may have
        destroyed some): checked at most every _STALE_CHECK_S, one cheap pragma."""
        now = time.monotonic()
        if now - self._checked_at < _STALE_CHECK_S:
            return
        self._checked_at = now
        try:
            version = int(self.db.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: {exc}") from exc
        if version != self._data_version:
            if self._data_version != -1:
                self._cache.clear()
                self._current = {sd: k for sd, k in self._current.items() if k in self._new}
            self._data_version = version

    def _destroy(self, where: str, arg: str) -> list[DestroyedKey]:
        self.flush()
        try:
            self.db.execute("BEGIN IMMEDIATE")
            rows = self.db.execute(
                f"SELECT key_id, subject, retention_until, fields_sealed FROM data_keys "  # noqa: S608 - fixed clauses
                f"WHERE {where}", (arg,)).fetchall()
            self.db.execute(f"DELETE FROM data_keys WHERE {where}", (arg,))  # noqa: S608 - fixed clauses
            self.db.execute("COMMIT")
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: {exc}") from exc
        destroyed = [DestroyedKey(r[0], r[1], date.fromisoformat(r[2]), int(r[3])) for r in rows]
        gone = {key.key_id for key in destroyed}
        for key_id in gone:
            self._cache.drop(key_id)
        self._current = {sd: k for sd, k in self._current.items() if k not in gone}
        return destroyed

    def destroy_subject(self, subject: str) -> list[DestroyedKey]:
        return self._destroy("subject = ?", subject)

    def destroy_expired(self, today: date) -> list[DestroyedKey]:
        """Keys whose retention date has passed (retention_until < today)."""
        # Asked on every ingest: when nothing is due, no write transaction and no WAL
        # truncation (an indexed look-up instead of two syncs).
        try:
            due = self.db.execute("SELECT 1 FROM data_keys WHERE retention_until < ? LIMIT 1",
                                  (today.isoformat(),)).fetchone()
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: {exc}") from exc
        if due is None and not any(r < today for _, r, _ in self._new.values()):
            return []
        return self._destroy("retention_until < ?", today.isoformat())
