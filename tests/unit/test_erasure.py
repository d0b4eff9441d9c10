"""Crypto-shredding on the embedded backend, checked by a canary scan of every byte held."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from broker import logs
from broker.app.erasure import erase_subject
from broker.app.service import Broker
from broker.clock import parse_instant
from broker.crypto.keystore import fields_sealed
from broker.errors import StorageError
from tests import factories as f

NOW = parse_instant("2026-05-10T12:00:00Z")
BSN = "246813579"
CANARIES = ["CANARY-NAAM-Q7", "0699887766", "canary.q7@example.nl", BSN, "CANARY-DESC-Q7",
            "CANARY-HUISNR-Q7"]


def all_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def plant(broker: Broker) -> None:
    victim = {"name": CANARIES[0], "bsn": BSN, "phone": CANARIES[1], "email": CANARIES[2],
              "consent_prevention_advice": True}
    broker.ingest("politie", "politie.woninginbraak", f.lines(
        f.woninginbraak(victim=victim, address={"house_number": CANARIES[5]}),
        f.woninginbraak()), NOW)
    broker.ingest("om", "om.gebiedsverbod", f.lines(
        f.gebiedsverbod(person={"name": CANARIES[0], "bsn": BSN,
                                "description": CANARIES[4]})), NOW)
    broker.ingest("om", "om.detentie_uitstroom", f.lines(
        f.detentie_uitstroom(person={"name": CANARIES[0], "bsn": BSN})), NOW)


def delivered(broker: Broker, recipient: str) -> str:
    return json.dumps([d.as_json() for d in broker.consume(recipient, None, 0, NOW)])


def test_erasure_leaves_no_plaintext_and_no_key_and_the_audit_verifies(
        make_broker: object, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    logs.configure("debug", "json")
    broker = make_broker()  # type: ignore[operator]
    plant(broker)
    before = delivered(broker, "preventie") + delivered(broker, "casusregisseur-dt") + \
        delivered(broker, "boa-hor-noord")
    for canary in CANARIES[:5]:
        assert canary in before  # the recipients did get the data before the erasure
    data_dir = tmp_path / "data"
    db = sqlite3.connect(data_dir / "keystore.db")
    subject = f"bsn:{broker.sealer.subject_pseudonym('bsn', BSN)}"
    wrapped = [bytes(r[0]) for r in db.execute(
        "SELECT wrapped FROM data_keys WHERE subject = ?", (subject,))]
    db.close()
    assert len(wrapped) == 2

    started = time.perf_counter()
    destroyed = broker.erase_subject(BSN, "AVG art. 17 verzoek, zaak 2026-0042", NOW).destroyed
    seconds = time.perf_counter() - started
    print(f"erase took {seconds * 1000:.1f} ms for {len(destroyed)} keys")
    # one key per retention period: 365 days (burglary, area ban) and 730 (detention)
    assert sorted(k.retention_until.isoformat() for k in destroyed) == ["2027-05-10",
                                                                        "2028-05-09"]
    assert (fields_sealed(destroyed) or 0) >= 15

    after = delivered(broker, "preventie") + delivered(broker, "casusregisseur-dt") + \
        delivered(broker, "boa-hor-noord")
    broker.close()
    held = all_bytes(data_dir)
    out, err = capfd.readouterr()
    for canary in CANARIES:
        assert canary.encode() not in held, canary
        assert canary not in after, canary
        assert canary not in out + err, canary
    for blob in wrapped:
        holders = [p.name for p in data_dir.rglob("*") if p.is_file() and blob in p.read_bytes()]
        assert holders == []  # secure_delete and a truncated WAL: no copy of the key
    assert '"erased_fields"' in after

    reopened = make_broker()  # type: ignore[operator]
    assert reopened.verify_audit().ok
    schema = reopened.registry.get("records.audit_entry")
    erasures = [e for _, d in reopened.log.audit_rows()
                if (e := schema.decode(d))["name"] == "erasure"]
    assert len(erasures) == 1
    assert erasures[0]["detail"]["keys"] == "2"
    # another person's data is untouched: the second burglary's victim is still readable
    still = delivered(reopened, "preventie")
    assert "Jan Slachtoffer" in still


def test_a_sealed_field_cannot_be_moved_to_another_record(broker: Broker) -> None:
    from broker.errors import StorageError

    broker.ingest("politie", "politie.woninginbraak",
                  f.lines(f.woninginbraak(), f.woninginbraak()), NOW)
    first, second = broker.log.read_store(-1, 10)
    env = broker.sealer.envelope
    a, b = env.decode(first.payload), env.decode(second.payload)
    # same victim BSN and so the same data key, but the event id is bound as associated data
    assert a["sealed"][0]["key_id"] == b["sealed"][0]["key_id"]
    b["sealed"][0]["ciphertext"] = a["sealed"][0]["ciphertext"]
    b["sealed"][0]["nonce"] = a["sealed"][0]["nonce"]
    with pytest.raises(StorageError, match="does not authenticate"):
        broker.sealer.open(env.encode(b), record_id=second.event_id)


def test_retention_destroys_keys_automatically_with_a_pinned_clock(broker: Broker) -> None:
    broker.ingest("om", "om.detentie_uitstroom", f.lines(f.detentie_uitstroom()), NOW)
    (got,) = broker.consume("casusregisseur-dt", None, 0, NOW)
    assert got.record["name"] == "Ali Terugkeer"
    # nazorg keeps 730 days, the longest for this type: the day before, the key still lives
    assert broker.destroy_expired_keys(parse_instant("2028-05-09T12:00:00Z")) == []
    destroyed = broker.destroy_expired_keys(parse_instant("2028-05-11T12:00:00Z"))
    assert len(destroyed) == 1
    schema = broker.registry.get("records.audit_entry")
    names = [schema.decode(d)["name"] for _, d in broker.log.audit_rows()]
    assert "retention" in names


def test_egress_never_carries_a_record_older_than_its_purpose_retention(
        broker: Broker) -> None:
    broker.ingest("politie", "politie.woninginbraak", f.lines(f.woninginbraak()), NOW)
    assert len(broker.consume("boa-hor-noord", None, 0, NOW)) == 1
    day_28 = parse_instant("2026-06-07T11:00:00Z")
    day_29 = parse_instant("2026-06-08T13:00:00Z")
    assert len(broker.consume("boa-hor-noord", None, 0, day_28)) == 1
    assert broker.consume("boa-hor-noord", None, 0, day_29) == []  # surveillance: 28 days
    assert len(broker.consume("preventie", "preventie-woninginbraak", 0, day_29)) == 1


def test_the_erasure_use_case_purges_after_erasing_and_survives_a_failed_purge(
        make_broker: Callable[..., Broker]) -> None:
    """broker.app.erasure: the purge capability runs after the keys are destroyed; a purge
    that fails leaves the erasure done and reports no partitions purged."""
    broker = make_broker()
    plant(broker)
    seen: list[int] = []

    def purge() -> int:  # what the Kafka capability reports: partitions purged
        seen.append(len(broker.data_keys.destroy_subject(
            f"bsn:{broker.sealer.subject_pseudonym('bsn', BSN)}")))
        return 3

    done = erase_subject(broker, BSN, "case 1", NOW, purge)
    assert seen == [0]  # the keys were already gone when the purge ran
    assert len(done.erased.destroyed) == 2
    assert done.ingress_partitions_purged == 3

    def broken() -> int:
        raise StorageError("the admin client cannot connect")

    again = erase_subject(broker, BSN, "case 1", NOW, broken)
    assert again.erased.destroyed == []
    assert again.ingress_partitions_purged is None
    assert erase_subject(broker, BSN, "case 1", NOW, None).ingress_partitions_purged is None
