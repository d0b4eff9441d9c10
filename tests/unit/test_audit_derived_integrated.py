"""Issue 15 item 1 on the Kafka integrated log (audit-kafka.db): the same store code, the
same re-derivation of its indexes by `audit verify`."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from broker.audit.checkpoint import parse_verifier_key
from broker.audit.entries import draft
from broker.audit.integrate import ChainPosition
from broker.audit.sequencer import AuditSequencer
from broker.audit.sqlite_integrated import DB_NAME, IntegratedAuditDb
from broker.audit.sqlite_store import AUDIT_TABLES
from broker.audit.verify import verify_log
from tests.unit.audit_support import audit_of, open_broker


def test_an_edited_index_of_the_integrated_log_is_reported(tmp_path: Path) -> None:
    with open_broker(tmp_path / "data") as broker:
        audit = audit_of(broker)
        schema, origin, signer = audit.schema, audit.origin, audit.signer
    sequencer = AuditSequencer(schema, origin=origin, signer=signer, every_entries=4)
    person = {"pseudonym": "ab" * 16, "id_type": "bsn", "role": "person.bsn"}
    drafts = [draft("decide", trace_id=None, start_ms=1000 + i, recipient="boa-hor-noord",
                    purpose="p", decision="release", event_type="politie.woninginbraak",
                    data_subjects=[person]) for i in range(10)]
    store = IntegratedAuditDb(tmp_path / "kafka", sequencer)
    store.lock_writer()
    store.append([(drafts, ChainPosition(0, 10, "0" * 64, 10))])
    verifier = parse_verifier_key(signer.verifier_key())
    assert verify_log(store.audit, schema, verifier, origin).ok
    store.close()
    db = sqlite3.connect(tmp_path / "kafka" / DB_NAME, isolation_level=None)
    for table in AUDIT_TABLES:
        db.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
    db.execute("UPDATE audit_index SET decision = 'withhold' WHERE seq = 3")
    db.close()
    store = IntegratedAuditDb(tmp_path / "kafka", sequencer)
    try:
        report = verify_log(store.audit, schema, verifier, origin)
        assert report.problem == "audit_index seq 3: its decision is not the entry's"
    finally:
        store.close()
