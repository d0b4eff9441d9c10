"""The derived tables are proven by `audit verify`'s bulk chunks, each entry read once.

`derive_fast` (a reader generated from the audit_entry schema, reading only the columns)
must give exactly the rows the fastavro decode gives, for any entry the sequencer can
write; and `audit verify` on an intact log must prove the tables in its bulk chunks
without the separate fastavro pass (issue 15 finding 1, the cost of it: issue 14).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.audit import derive_fast, verify, verify_bulk, verify_derived
from broker.audit.checkpoint import parse_verifier_key
from broker.audit.entries import GENESIS, draft, seal
from broker.audit.sequencer import subject_keys
from broker.model.codec import MARKER
from tests.unit.audit_support import audit_of, build_log, copy_log, open_broker, tampering
from tests.unit.test_audit_mutations import SCHEMA

SKIP = len(MARKER) + len(SCHEMA.fingerprint)
TEXT = st.text(max_size=200)  # lengths over 63 bytes take a two-byte varint
OPTIONAL = st.none() | TEXT
PSEUDONYM = st.binary(min_size=16, max_size=16).map(bytes.hex)

entries = st.builds(
    lambda name, recipient, purpose, decision, event_type, reason, released, withheld,
    subjects, start, legal, cov: draft(
        name, trace_id=None, start_ms=start, recipient=recipient, purpose=purpose,
        decision=decision, event_type=event_type, reason=reason, legal_basis=legal,
        covenant_id=cov, fields_released=released, fields_withheld=withheld,
        data_subjects=[{"pseudonym": p, "id_type": "bsn", "role": r} for p, r in subjects]),
    st.sampled_from(["decide", "access", "tombstone", "quarantine", "control"]) | TEXT,
    OPTIONAL, OPTIONAL, st.sampled_from([None, "release", "withhold", "expire"]) | OPTIONAL,
    OPTIONAL, OPTIONAL, st.lists(TEXT, max_size=70), st.lists(TEXT, max_size=5),
    st.lists(st.tuples(PSEUDONYM | st.sampled_from(["ab" * 16]), TEXT), max_size=4),
    st.integers(-(2**40), 2**45), OPTIONAL, OPTIONAL)


def exact_rows(data: list[bytes], first: int) -> tuple[list[Any], list[Any]]:
    decode = verify_derived._projecting_decoder(SCHEMA)
    index, subjects = [], []
    for seq, entry in enumerate(map(decode, data), start=first):
        index.append(verify_derived.index_row(seq, entry))
        subjects += [(seq, k) for k in sorted(subject_keys(entry))]
    return index, subjects


@settings(max_examples=150, deadline=None)
@given(st.lists(entries, min_size=1, max_size=12), st.integers(0, 2**40))
def test_the_fast_reader_derives_what_the_decode_derives(drafts: list[dict[str, Any]],
                                                         first: int) -> None:
    prev = GENESIS
    data = []
    for seq, item in enumerate(drafts, start=first):
        sealed = seal(SCHEMA, item, seq, prev, 1_800_000_000_000)
        data.append(sealed.data)
        prev = sealed.entry_hash
    derive = derive_fast.deriver(SCHEMA.raw, SKIP)
    assert derive is not None
    assert derive(data, first) == exact_rows(data, first)


def test_a_truncated_entry_is_left_to_the_exact_comparison() -> None:
    data = seal(SCHEMA, draft("decide", trace_id=None, start_ms=1, event_type="x"), 0,
                GENESIS, 1).data
    derive = derive_fast.deriver(SCHEMA.raw, SKIP)
    assert derive is not None
    with pytest.raises((IndexError, ValueError)):
        derive([data[:40]], 0)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("derived-fast") / "data"
    build_log(path)
    return path


@pytest.fixture(params=[1, 2], ids=["one process", "two workers"])
def small_chunks(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 8 entries: the 39-entry log has five, the last one partial."""
    monkeypatch.setattr(verify_bulk, "CHUNK_LEVEL", 3)
    monkeypatch.setattr(verify_bulk, "workers", lambda: request.param)


def _verify(data: Path) -> verify.AuditReport:
    with open_broker(data) as broker:
        audit = audit_of(broker)
        return verify.verify_log(audit.store, audit.schema,
                                 parse_verifier_key(audit.verifier_key()), audit.origin)


def test_an_intact_log_proves_its_tables_in_the_bulk_chunks(
        small_chunks: None, template: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    data = copy_log(template, tmp_path / "data")

    def no_second_pass(*_: Any) -> str | None:
        raise AssertionError("the bulk chunks read every entry already")

    monkeypatch.setattr(verify_derived, "derived_problem", no_second_pass)
    assert _verify(data).ok


@pytest.mark.parametrize("edit", [
    "UPDATE audit_index SET recipient = 'x' WHERE seq = 13",
    "DELETE FROM audit_subject WHERE seq = (SELECT MAX(seq) FROM audit_subject)",
    "INSERT INTO audit_index VALUES (-1, 'decide', NULL, NULL, NULL, NULL, 0)",
    "INSERT INTO audit_subject VALUES (x'00112233445566778899aabbccddeeff', 1000)"])
def test_an_edited_table_fails_the_chunks_and_is_named_by_the_exact_comparison(
        small_chunks: None, template: Path, tmp_path: Path, edit: str) -> None:
    data = copy_log(template, tmp_path / "data")
    with tampering(data) as db:
        db.execute(edit)
    with open_broker(data) as broker:
        audit = audit_of(broker)
        assert verify._verify_in_bulk(audit.store, audit.schema,
                                      parse_verifier_key(audit.verifier_key()), audit.origin,
                                      ()) is None
        problem = verify_derived.derived_problem(
            cast("verify_derived.DerivedRows", audit.store), audit.schema)
    assert problem is not None
    assert _verify(data).problem == problem
