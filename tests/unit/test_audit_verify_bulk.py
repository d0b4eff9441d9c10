"""`audit verify` in bulk agrees with the exact walk: same report, never a false accept.

Chunks of 2 and 4 entries (instead of 65536) make every random log span many chunks, so
the joins between chunks (chain links, nodes above a chunk, roots at checkpoints that
fall inside, at the end of, or across chunks) are all exercised, in one process and in
worker processes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.audit import verify_bulk
from broker.audit.entries import Draft
from broker.audit.sequencer import AuditSequencer
from broker.audit.verify import AuditReport, _verify_in_bulk, verify_log
from broker.backends.embedded.event_log import SqliteEventLog
from tests.unit.test_audit_mutations import (
    FAST,
    MUTATIONS,
    ORIGIN,
    SCHEMA,
    TMP,
    VERIFIER,
    batches,
    build,
    mutate,
    tamper,
)


def reports(path: Path) -> tuple[AuditReport, AuditReport, AuditReport | None]:
    log = SqliteEventLog(path, SCHEMA, AuditSequencer(SCHEMA, origin=ORIGIN))
    try:
        return (verify_log(log.audit, SCHEMA, VERIFIER, ORIGIN),
                verify_log(log.audit, SCHEMA, VERIFIER, ORIGIN, bulk=False),
                _verify_in_bulk(log.audit, SCHEMA, VERIFIER, ORIGIN, ()))
    finally:
        log.close()


@pytest.fixture(params=[(1, 1), (2, 1), (2, 2)], ids=["chunk2", "chunk4", "chunk4-2procs"])
def small_chunks(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    level, processes = request.param
    monkeypatch.setattr(verify_bulk, "CHUNK_LEVEL", level)
    monkeypatch.setattr(verify_bulk, "workers", lambda: processes)


@settings(FAST, max_examples=60,
          suppress_health_check=[*FAST.suppress_health_check,
                                 HealthCheck.function_scoped_fixture])  # the patch is constant
@given(batches, st.integers(1, 9), st.sampled_from(MUTATIONS), st.data())
def test_bulk_report_is_the_exact_report(small_chunks: None, log_batches: list[list[Draft]],
                                         every: int, kind: str, data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory(dir=TMP) as tmp:
        path = Path(tmp) / "broker.db"
        build(path, log_batches, every)
        bulk, exact, fast = reports(path)
        assert bulk == exact
        assert fast == exact  # an intact log takes the bulk path
        db = tamper(path)
        try:
            mutate(db, kind, data, sum(map(len, log_batches)))
        finally:
            db.close()
        bulk, exact, fast = reports(path)
        assert bulk == exact
        if fast is not None:  # bulk said intact: then so does the exact walk
            assert exact.ok
            assert fast == exact
