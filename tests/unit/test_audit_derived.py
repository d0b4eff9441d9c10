"""Issue 15 item 1: the tables reports read (audit_index, audit_subject) are verified.

An insider with write access to broker.db drops the append-only triggers and edits the
query or subject index: reports change while the tree still verifies. `audit verify` now
re-derives both tables from the proven entries and names the first difference.
"""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker import cli
from broker.audit import verify_derived
from broker.audit.report_html import render_html
from broker.audit.store import QueryFilter
from tests.unit.audit_support import audit_of, build_log, copy_log, open_broker, tampering, verify


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("derived") / "data"
    build_log(path)
    return path


@pytest.fixture(autouse=True, params=["one pass", "ranges of 8 on workers"])
def ranges(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both ways the check runs: one pass, and seq ranges in worker processes (a large
    log's path, here with ranges small enough for the 39-entry log to have five)."""
    if request.param != "one pass":
        monkeypatch.setattr(verify_derived, "_RANGE", 8)


@pytest.fixture
def log(template: Path, tmp_path: Path) -> Path:
    return copy_log(template, tmp_path / "data")


def cli_verify(data: Path) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["--data-dir", str(data), "--json", "audit", "verify",
                         "--require-signed"])
    return code, json.loads(out.getvalue())


def pseudonyms(data: Path) -> list[bytes]:
    db = sqlite3.connect(data / "broker.db")
    try:
        return [bytes(r[0]) for r in db.execute("SELECT DISTINCT pseudonym FROM audit_subject "
                                                "ORDER BY pseudonym")]
    finally:
        db.close()


def outputs(data: Path, people: list[bytes]) -> dict[str, Any]:
    """What `audit query`, the console's audit page and subject reports read, per filter."""
    with open_broker(data) as broker:
        store = audit_of(broker).store
        queries = {"all": QueryFilter(), "noord": QueryFilter(recipient="boa-hor-noord"),
                   "release": QueryFilter(decision="release"),
                   "noord-release": QueryFilter(recipient="boa-hor-noord", decision="release"),
                   "withhold": QueryFilter(decision="withhold"),
                   "access": QueryFilter(name="access"),
                   "window": QueryFilter(since_ms=0, until_ms=2**62)}
        out: dict[str, Any] = {k: [seq for seq, _ in store.query(q)] for k, q in queries.items()}
        out["subjects"] = [store.subject_seqs(p) for p in people]
        return out


def test_the_untouched_log_verifies_with_its_indexes(log: Path) -> None:
    assert verify(log).ok
    code, report = cli_verify(log)
    assert code == 0
    assert report["ok"]


def release_seqs(log: Path) -> list[int]:
    seqs: list[int] = outputs(log, [])["noord-release"]
    return seqs


def test_deleted_subject_rows_are_reported(log: Path) -> None:
    person = pseudonyms(log)[0]
    with tampering(log) as db:
        first = db.execute("SELECT MIN(seq) FROM audit_subject WHERE pseudonym = ?",
                           (person,)).fetchone()[0]
        db.execute("DELETE FROM audit_subject WHERE pseudonym = ?", (person,))
    assert outputs(log, [person])["subjects"] == [[]]  # the report would say: nothing
    report = verify(log)
    assert report.problem == (f"audit_subject seq {first}: 1 of the entry's data subjects "
                              "are missing")
    code, result = cli_verify(log)
    assert code == 1
    assert result["problem"] == report.problem


def test_an_edited_decision_in_the_query_index_is_reported(log: Path) -> None:
    seqs = release_seqs(log)
    assert seqs
    with tampering(log) as db:
        db.execute("UPDATE audit_index SET decision = 'withhold' WHERE recipient = "
                   "'boa-hor-noord' AND decision = 'release'")
    assert release_seqs(log) == []
    assert verify(log).problem == f"audit_index seq {seqs[0]}: its decision is not the entry's"
    assert cli_verify(log)[0] == 1


def test_a_deleted_index_row_is_reported(log: Path) -> None:
    seq = release_seqs(log)[0]
    with tampering(log) as db:
        db.execute("DELETE FROM audit_index WHERE seq = ?", (seq,))
    assert verify(log).problem == f"audit_index seq {seq}: the row is missing (the entry exists)"


def test_an_index_row_without_an_entry_is_reported(log: Path) -> None:
    with tampering(log) as db:
        size = db.execute("SELECT MAX(seq) + 1 FROM audit").fetchone()[0]
        db.execute("INSERT INTO audit_index VALUES (?, 'decision', 'x', 'y', 'release', 'z', 0)",
                   (size,))
        db.execute("INSERT INTO audit_subject VALUES (?, ?)", (b"\x01" * 16, size + 1))
    assert verify(log).problem == (f"audit_index seq {size}: a row for an entry that is not "
                                   "in the log")


def test_a_subject_row_naming_someone_else_is_reported(log: Path) -> None:
    with tampering(log) as db:
        db.execute("INSERT INTO audit_subject VALUES (?, 0)", (b"\x02" * 16,))
    problem = verify(log).problem
    assert problem is not None
    assert problem.startswith("audit_subject seq 0: ")


COLUMNS = ["seq", "name", "recipient", "purpose", "decision", "event_type", "start_time"]
VALUES = st.one_of(st.none(), st.integers(-1, 60), st.sampled_from(
    ["release", "withhold", "access", "decision", "boa-hor-noord", "preventie", ""]))
EDITS = st.one_of(
    st.tuples(st.just("delete"), st.sampled_from(["audit_index", "audit_subject"]),
              st.integers(0, 60)),
    st.tuples(st.just("update"), st.just("audit_index"), st.integers(0, 60),
              st.sampled_from(COLUMNS), VALUES),
    st.tuples(st.just("update"), st.just("audit_subject"), st.integers(0, 60),
              st.sampled_from(["seq", "pseudonym"]), st.integers(0, 60)),
    st.tuples(st.just("insert"), st.just("audit_index"), st.integers(0, 60),
              st.sampled_from(COLUMNS), VALUES),
    st.tuples(st.just("insert"), st.just("audit_subject"), st.integers(0, 60),
              st.sampled_from(["seq", "pseudonym"]), st.integers(0, 60)),
)


def apply_edit(db: sqlite3.Connection, edit: tuple[Any, ...], people: list[bytes]) -> None:
    kind, table, pick = edit[0], edit[1], edit[2]
    rows = db.execute(f"SELECT rowid, * FROM {table} ORDER BY rowid").fetchall() \
        if table == "audit_index" else \
        db.execute("SELECT pseudonym, seq FROM audit_subject ORDER BY seq, pseudonym").fetchall()
    row = rows[pick % len(rows)]
    with contextlib.suppress(sqlite3.IntegrityError):  # a collision is no edit at all
        if table == "audit_index":
            if kind == "delete":
                db.execute("DELETE FROM audit_index WHERE seq = ?", (row[1],))
            elif kind == "update":
                db.execute(f"UPDATE audit_index SET {edit[3]} = ? WHERE seq = ?",
                           (edit[4], row[1]))
            else:
                values = dict(zip(COLUMNS, row[1:], strict=True))
                values["seq"] = pick + 1000
                values[edit[3]] = edit[4] if edit[3] != "seq" else pick + 1000
                db.execute("INSERT INTO audit_index VALUES (?, ?, ?, ?, ?, ?, ?)",
                           tuple(values[c] for c in COLUMNS))
            return
        pseudonym, seq = row
        value = people[edit[4] % len(people)] if len(edit) > 3 and edit[3] == "pseudonym" \
            else edit[4] if len(edit) > 3 else None
        if kind == "delete":
            db.execute("DELETE FROM audit_subject WHERE pseudonym = ? AND seq = ?",
                       (pseudonym, seq))
        elif kind == "update":
            db.execute(f"UPDATE audit_subject SET {edit[3]} = ? WHERE pseudonym = ? AND seq = ?",
                       (value, pseudonym, seq))
        else:
            new = (value, seq) if edit[3] == "pseudonym" else (pseudonym, value)
            db.execute("INSERT INTO audit_subject (pseudonym, seq) VALUES (?, ?)", new)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edit=EDITS)
def test_any_single_edit_is_reported_or_changes_no_output(template: Path, tmp_path: Path,
                                                          edit: tuple[Any, ...]) -> None:
    people = pseudonyms(template)
    before = outputs(template, people)
    data = tmp_path / f"data-{abs(hash(edit))}"
    copy_log(template, data)
    with tampering(data) as db:
        apply_edit(db, edit, people)
    report = verify(data)
    if report.ok:
        assert outputs(data, people) == before
    else:
        assert report.problem is not None
        assert report.problem.startswith(("audit_index seq", "audit_subject seq"))


def test_a_subject_report_states_the_checkpoint_it_is_complete_up_to(log: Path) -> None:
    person = pseudonyms(log)[0].hex()
    verified = verify(log)
    assert verified.unsigned == 0
    with open_broker(log) as broker:
        report = audit_of(broker).subject_report(person, "bsn", "2026-05-10T12:00:00Z")
    assert report["complete_up_to"] == {"size": verified.signed_size, "root": verified.root}
    assert verified.root in render_html(report, ZoneInfo("Europe/Amsterdam"))


def test_a_report_made_from_an_edited_index_differs_from_the_log(log: Path) -> None:
    person = pseudonyms(log)[0]
    with open_broker(log) as broker:
        audit = audit_of(broker)
        honest = audit.subject_report(person.hex(), "bsn", "2026-05-10T12:00:00Z")
        assert verify_derived.report_difference(audit.store, audit.schema, honest) is None
    with tampering(log) as db:
        first = db.execute("SELECT MIN(seq) FROM audit_subject WHERE pseudonym = ?",
                           (person,)).fetchone()[0]
        db.execute("DELETE FROM audit_subject WHERE pseudonym = ?", (person,))
    with open_broker(log) as broker:
        audit = audit_of(broker)
        lying = audit.subject_report(person.hex(), "bsn", "2026-05-10T12:00:00Z")
        assert lying["summary"]["disclosures"] == 0
        assert verify_derived.report_difference(audit.store, audit.schema, lying) == (
            f"entry {first}: names the person, the report leaves it out")
