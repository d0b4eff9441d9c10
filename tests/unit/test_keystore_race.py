"""Two writers of one SQLite key store create a key for the same subject and day at once:
each keeps its own key (unique ids), both seal and open, and erasure destroys both."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import pytest

from broker.app.service import Broker
from broker.crypto.kek import FileKek
from broker.crypto.key_ids import new_key_id, subject_of
from broker.crypto.keystore import SqliteKeyStore
from broker.crypto.sealing import Sealer
from broker.pipeline.ingest import Accepted, validate
from tests import factories as f

DAY = date(2027, 5, 10)
BSN = "246813579"
NAME = "RACE-NAAM-Q9"


@pytest.fixture
def two_writers(make_broker: Callable[..., Broker], tmp_path: Path
                ) -> Iterator[tuple[Broker, list[SqliteKeyStore], list[Sealer]]]:
    """Two key stores on one keystore.db (two SQLite connections), a sealer on each."""
    broker = make_broker()
    path = tmp_path / "shared-keystore.db"
    stores = [SqliteKeyStore(path, FileKek(broker.keys)) for _ in range(2)]
    sealers = [Sealer(broker.registry, store, broker.keys.subject_key(), {}, 365,
                      broker.covenant.zone) for store in stores]
    yield broker, stores, sealers
    for store in stores:
        store.close()


def _event(broker: Broker) -> Accepted:
    raw = json.dumps(f.woninginbraak(victim={"name": NAME, "bsn": BSN,
                                             "consent_prevention_advice": True})).encode()
    return validate(raw, "politie", "politie.woninginbraak", broker.registry, broker.limits)


def test_key_ids_are_unique_and_name_their_subject() -> None:
    ids = {new_key_id("bsn:abc", DAY) for _ in range(1000)}
    assert len(ids) == 1000
    assert all(subject_of(i) == "bsn:abc" and i.startswith("bsn:abc|2027-05-10|") for i in ids)
    assert subject_of("bsn:abc|2027-05-10") == "bsn:abc"  # the older form still reads


def test_two_writers_keep_their_own_keys_and_erasure_destroys_both(
        two_writers: tuple[Broker, list[SqliteKeyStore], list[Sealer]]) -> None:
    broker, (a, b), (seal_a, seal_b) = two_writers
    one, two = _event(broker), _event(broker)
    # Both writers seal before either flushes: each creates a key for the same subject/day.
    sealed_a = seal_a.seal(one.schema, one.record, one.event_id, DAY)
    sealed_b = seal_b.seal(two.schema, two.record, two.event_id, DAY)
    subject = f"bsn:{seal_a.subject_pseudonym('bsn', BSN)}"
    ids_a = {k for k in a._new if subject_of(k) == subject}
    ids_b = {k for k in b._new if subject_of(k) == subject}
    assert len(ids_a) == len(ids_b) == 1
    assert ids_a != ids_b  # before: one "<subject>|<date>" id, and the last flush won
    seal_a.flush()
    seal_b.flush()

    rows = a.db.execute("SELECT key_id FROM data_keys WHERE subject = ?", (subject,)).fetchall()
    assert {r[0] for r in rows} == ids_a | ids_b
    for sealer in (seal_a, seal_b):  # each opens what either sealed
        for payload, event in ((sealed_a, one), (sealed_b, two)):
            opened = sealer.open(payload)
            assert opened.record["victim"]["name"] == NAME
            assert not opened.erased
            assert opened.subjects["victim.name"] == subject
            assert str(opened.record["event_id"]) == event.event_id

    # A third writer finds a stored key for the subject/day and reuses it.
    c = SqliteKeyStore(a.path, FileKek(broker.keys))
    key_id, _ = c.data_key(subject, DAY, 1)
    assert key_id in ids_a | ids_b
    assert not c._new
    c.close()

    destroyed = a.destroy_subject(subject)
    assert {k.key_id for k in destroyed} == ids_a | ids_b
    assert sum(k.fields_sealed for k in destroyed) >= 4
    fresh = SqliteKeyStore(a.path, FileKek(broker.keys))
    try:
        assert all(fresh.lookup(k) is None for k in ids_a | ids_b)
    finally:
        fresh.close()
    b._checked_at = 0.0  # the other writer notices the delete at its next check
    for sealer in (seal_a, seal_b):
        for payload in (sealed_a, sealed_b):
            opened = sealer.open(payload)
            assert opened.record["victim"]["name"] is None
            assert "victim.name" in opened.erased
