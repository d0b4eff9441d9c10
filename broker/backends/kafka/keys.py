"""Data keys on the Kafka backend: the compacted topic ``<prefix>keys`` (default
``covenant.keys``, one partition), shared by every process of the deployment.

A record's key is the data key id (``<subject>|<retention date>|<random>``,
broker/crypto/key_ids.py); its value is a single-object Avro ``records.data_key``: the
subject, the retention date, the data key wrapped by the key-encryption key and when it was
created. Destroying a key (erasure, end of retention) writes a tombstone (null value) under
its id. The key-encryption key never goes to Kafka: it stays a 0600 file
(broker/crypto/kek.py).

Each process reads the topic (read_committed) from the beginning when it first needs a
key (commands that never seal or open, such as `ingest`, never read it) and keeps the
wrapped keys in memory, unwrapping a key only when it is used (a bounded cache of
unwrapped keys). It reads on from where it stopped:

* at most every REFRESH_INTERVAL_S when a key is asked for, so tombstones written by
  another process reach this one within about a second;
* when `lookup` misses: a record sealed under a key is committed only after the key
  record was acknowledged (see `flush`), so reading to the current end offset finds every
  key that exists; a key still missing then was destroyed and is remembered as gone;
* in `flush`, when keys already stored were used since the last flush: if one of them
  was destroyed meanwhile by another process, `flush` raises TransientBackendError so the
  batch aborts and is redone under a new key (nothing is committed under a dead key).
  Between that check and the batch's commit a few milliseconds remain in which a
  concurrent erasure also shreds the batch's fields of that subject.

New keys are buffered and produced by `flush()` (idempotent producer, acks=all, waiting for
every acknowledgement), which the pipeline calls before it commits anything sealed under
them, as the SQLite store's flush. Ids are random per created key, so writers in separate
processes never overwrite each other's keys; a writer that already knows a key for
(subject, date) reuses it. Sealed-field counts are not kept on Kafka (a count would
rewrite the record, and with it another copy of the wrapped key): `DestroyedKey.
fields_sealed` is None here (unknown), and audit entries leave the count out.

How long a destroyed wrapped key stays on disk (the crypto-shredding window on Kafka):
the tombstone does not remove the earlier record by itself; the log cleaner does, once
the tombstone lies outside the active segment. The topic is created with
(kafka_topics.key_topic_configs)

  cleanup.policy=compact, segment.ms=kafka.keys_segment_ms (default 10 minutes),
  min.cleanable.dirty.ratio=0.01, min.compaction.lag.ms=0,
  max.compaction.lag.ms=kafka.keys_segment_ms, file.delete.delay.ms=1000,
  delete.retention.ms=86400000 (tombstones stay a day: a process that stalls while reading
  the topic still sees them; they hold the key id, not key material).

Kafka rolls a segment only when a record is appended, so the wrapped key leaves the log
files: after the first write to the key topic that comes at least segment.ms after the
segment holding the tombstone was opened, plus the cleaner's next pass
(log.cleaner.backoff.ms, broker setting, default 15 s) and file.delete.delay.ms. With new
keys being created every day (new subjects, the daily quarantine key) that is about
segment.ms; on a topic nobody writes to it lasts until the next key is created. Every
replica follows the same rules. Outside Kafka's reach: copies in broker backups or
snapshots, tiered storage, and freed disk blocks; rotate the KEK if that matters.
Memory: every live wrapped key (about 200-300 bytes with its id) in every process.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from kafka import KafkaProducer, TopicPartition

from broker.backends.kafka.errors import kafka_errors, retrying
from broker.backends.kafka.io import Clients, close_quietly, read_with_ends
from broker.crypto.kek import KeyEncryptionKey
from broker.crypto.key_ids import new_key_id
from broker.crypto.keystore import DEFAULT_CACHE_LIMIT, DestroyedKey, KeyCache
from broker.errors import StorageError, TransientBackendError
from broker.logs import get_logger
from broker.model.schemas import Schema

REFRESH_INTERVAL_S = 1.0
SEND_TIMEOUT_S = 60.0
_GONE_LIMIT = 100_000  # ids known destroyed, remembered so a miss does not re-read


@dataclass(frozen=True, slots=True)
class _Entry:
    subject: str
    retention_until: date
    wrapped: bytes


class KafkaKeyStore:
    """The data keys of one process, kept in step with the key topic. One thread."""

    def __init__(self, clients: Clients, topic: str, schema: Schema,
                 kek: KeyEncryptionKey, cache_limit: int = DEFAULT_CACHE_LIMIT) -> None:
        self.clients = clients
        self.tp = TopicPartition(topic, 0)
        self.schema = schema
        self.kek = kek
        self.logger = get_logger(component="kafka-keys", topic=topic)
        self._wrapped: dict[str, _Entry] = {}  # every live key on the topic
        self._current: dict[tuple[str, date], str] = {}  # (subject, date) -> id to reuse
        self._cache = KeyCache(cache_limit)  # unwrapped keys
        self._new: dict[str, _Entry] = {}  # created here, not yet produced
        self._sending: dict[str, Any] = {}  # sent by send_new(), not yet flushed: future
        self._used: set[str] = set()  # stored keys handed out since the last flush
        self._gone: set[str] = set()
        self._position = 0
        self._refreshed_at = float("-inf")  # read at first use
        self._producer: KafkaProducer | None = None
        self.reader = clients.reader("keys")

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self._producer is not None:
                close_quietly(self._producer)
                self._producer = None
            with kafka_errors("closing the key reader"):
                self.reader.close()

    # -- reading the topic -----------------------------------------------------------------
    def refresh(self) -> None:
        """Read the key topic on to its current end (tombstones drop keys)."""
        loading = self._refreshed_at == float("-inf")
        records, ends = read_with_ends(self.reader, {self.tp: self._position})
        for record in records[self.tp]:
            key_id = bytes(record.key or b"").decode()
            if record.value is None:
                self._forget(key_id)
                continue
            try:
                item = self.schema.decode(bytes(record.value))
                entry = _Entry(str(item["subject"]), item["retention_until"],
                               bytes(item["wrapped"]))
            except (ValueError, KeyError, TypeError) as exc:
                raise StorageError(f"key topic {self.tp.topic} offset {record.offset}: not a "
                                   f"data key record ({type(exc).__name__})") from None
            self._wrapped[key_id] = entry
            self._gone.discard(key_id)
            self._current.setdefault((entry.subject, entry.retention_until), key_id)
        self._position = ends[self.tp]
        self._refreshed_at = time.monotonic()
        if loading:
            self.logger.info("data keys loaded", keys=len(self._wrapped),
                             position=self._position)

    def _maybe_refresh(self) -> None:
        if time.monotonic() - self._refreshed_at >= REFRESH_INTERVAL_S:
            self.refresh()

    def _forget(self, key_id: str) -> None:
        entry = self._wrapped.pop(key_id, None)
        self._cache.drop(key_id)
        if entry is not None and \
                self._current.get((entry.subject, entry.retention_until)) == key_id:
            del self._current[(entry.subject, entry.retention_until)]
        if len(self._gone) >= _GONE_LIMIT:
            self._gone.clear()
        self._gone.add(key_id)

    def _key(self, key_id: str) -> bytes | None:
        """The unwrapped key of a live (or unflushed) key id, or None."""
        key = self._cache.get(key_id)
        if key is not None:
            return key
        entry = self._wrapped.get(key_id) or self._new.get(key_id)
        if entry is None:
            return None
        key = self.kek.unwrap(entry.wrapped, key_id)
        if key_id in self._new:
            self._cache.pin(key_id, key)
        else:
            self._cache.put(key_id, key)
        return key

    # -- the DataKeys protocol (broker/crypto/sealing.py) -----------------------------------
    def data_key(self, subject: str, retention_until: date, fields: int) -> tuple[str, bytes]:
        """The key for (subject, retention date), created on first use; `flush()` must
        run before anything sealed under a new key is committed."""
        self._maybe_refresh()
        found = self._current.get((subject, retention_until))
        key = self._key(found) if found is not None else None
        if found is None or key is None:
            found, key = new_key_id(subject, retention_until), secrets.token_bytes(32)
            self._new[found] = _Entry(subject, retention_until, self.kek.wrap(key, found))
            self._cache.pin(found, key)
            self._current[(subject, retention_until)] = found
        elif found not in self._new:
            self._used.add(found)
        return found, key

    def lookup(self, key_id: str) -> bytes | None:
        self._maybe_refresh()
        key = self._key(key_id)
        if key is not None or key_id in self._gone:
            return key
        self.refresh()  # another writer's key, created since the last read
        key = self._key(key_id)
        if key is None:  # what was sealed under it is committed, so the key was destroyed
            self._forget(key_id)
        return key

    def send_new(self) -> None:
        """Start producing the new keys without waiting for Kafka, so that their
        acknowledgement overlaps the caller's other waits; `flush` still waits for it (and
        sends again whatever failed) before anything sealed under them may commit."""
        todo = {k: e for k, e in self._new.items() if k not in self._sending}
        if not todo:
            return
        producer = self._writer()
        with kafka_errors("writing data keys"):
            for key_id, value in self._encode(todo).items():
                self._sending[key_id] = producer.send(self.tp.topic, key=key_id.encode(),
                                                      value=value, partition=0)

    def _encode(self, entries: dict[str, _Entry]) -> dict[str, bytes | None]:
        now_ms = int(time.time() * 1000)
        return {k: self.schema.encode({"subject": e.subject, "retention_until":
                                       e.retention_until, "wrapped": e.wrapped,
                                       "created_ms": now_ms}) for k, e in entries.items()}

    def _acknowledged(self) -> set[str]:
        """Keys whose send_new() Kafka acknowledged (a failed one is sent again)."""
        sending, self._sending = self._sending, {}
        done: set[str] = set()
        for key_id, future in sending.items():
            try:
                future.get(timeout=SEND_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - flush() sends it again, with retries
                self.logger.warning("data key send failed; sending again",
                                    error=type(exc).__name__)
                continue
            done.add(key_id)
        return done

    def flush(self) -> None:
        """Produce the new keys and wait until Kafka acknowledged them; then check that no
        stored key used since the last flush was destroyed meanwhile."""
        if self._new:
            new = dict(self._new)
            acknowledged = self._acknowledged()
            rest = {k: e for k, e in new.items() if k not in acknowledged}
            if rest:
                self._produce(self._encode(rest), "writing data keys")
            self._wrapped.update(new)
            for key_id in new:
                self._new.pop(key_id, None)
            self._cache.unpin(new)  # on the topic now: under the bound like any other
        if self._used:
            used, self._used = self._used, set()
            self.refresh()
            lost = [k for k in used if k not in self._wrapped]
            if lost:
                raise TransientBackendError(
                    f"{len(lost)} data key(s) used in this batch were destroyed meanwhile by "
                    "another process (erasure or end of retention); the batch is redone "
                    "under new keys")

    # -- destruction -----------------------------------------------------------------------
    def destroy_subject(self, subject: str) -> list[DestroyedKey]:
        return self._destroy(lambda e: e.subject == subject)

    def destroy_expired(self, today: date) -> list[DestroyedKey]:
        """Keys whose retention date has passed (retention_until < today)."""
        self._maybe_refresh()
        if not any(e.retention_until < today
                   for e in (*self._wrapped.values(), *self._new.values())):
            return []  # asked on every sweep: nothing due costs no write
        return self._destroy(lambda e: e.retention_until < today)

    def _destroy(self, doomed: Callable[[_Entry], bool]) -> list[DestroyedKey]:
        self._used.clear()  # a destroyer's own batch is not what the flush check is for
        self.flush()
        self.refresh()
        found = {k: e for k, e in self._wrapped.items() if doomed(e)}
        if found:
            self._produce(dict.fromkeys(found), "destroying data keys")
        for key_id in found:
            self._forget(key_id)
        if found:
            self.logger.info("data keys destroyed", keys=len(found))
        return [DestroyedKey(k, e.subject, e.retention_until, None) for k, e in found.items()]

    # -- writing ---------------------------------------------------------------------------
    def _produce(self, values: dict[str, bytes | None], what: str) -> None:
        """Send key records (None: a tombstone) and wait for every acknowledgement,
        retrying transient failures (a re-sent record carries the same bytes)."""
        cfg = self.clients.cfg

        def attempt() -> None:
            producer = self._writer()
            try:
                with kafka_errors(what):
                    futures: list[Any] = [producer.send(self.tp.topic, key=k.encode(),
                                                        value=v, partition=0)
                                          for k, v in values.items()]
                    producer.flush(timeout=SEND_TIMEOUT_S)
                    for future in futures:
                        future.get(timeout=SEND_TIMEOUT_S)
            except TransientBackendError:
                close_quietly(producer)
                self._producer = None
                raise

        retrying(attempt, attempts=cfg.retries, backoff_ms=cfg.retry_backoff_ms)

    def _writer(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = self.clients.producer("keys")
        return self._producer
