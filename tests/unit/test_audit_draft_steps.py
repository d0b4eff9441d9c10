"""Issue 11, item 5: an audit draft is read-only and changed only by steps that return a new
one; the backend's offset is the last step. The sealed bytes are those of the fields alone."""

from __future__ import annotations

from pathlib import Path

import mypy.api
import pytest

from broker.audit.entries import GENESIS, at_offset, draft, seal, with_fields, with_subjects
from broker.config import load_settings
from broker.model.schemas import Schema, SchemaRegistry

SUBJECTS = [{"pseudonym": "ab" * 16, "id_type": "bsn", "role": "subject"}]


def _schema() -> Schema:
    return SchemaRegistry(load_settings(environ={}).schemas_dir).get("records.audit_entry")


def test_the_steps_return_new_drafts_and_leave_the_earlier_one_as_it_was() -> None:
    base = draft("decide", trace_id="t" * 32, start_ms=1, recipient="r", purpose="p")
    named = with_subjects(base, SUBJECTS)
    placed = at_offset(named, 7)
    assert (base["data_subjects"], base["egress_offset"]) == ([], None)
    assert (named["data_subjects"], named["egress_offset"]) == (SUBJECTS, None)
    assert (placed["data_subjects"], placed["egress_offset"]) == (SUBJECTS, 7)


def test_a_step_refuses_a_field_the_audit_entry_does_not_have() -> None:
    with pytest.raises(TypeError, match="unknown audit fields"):
        with_fields(draft("decide", trace_id=None, start_ms=1), egress_ofset=3)  # type: ignore[call-arg]


_MISUSE = """
from broker.audit.entries import draft, with_fields
d = draft("decide", trace_id=None, start_ms=1)
d["decision"] = "release"
with_fields(d, egress_ofset=3)
with_fields(d, event_offset="seven")
"""


def test_the_type_checker_refuses_an_in_place_edit_a_misspelt_field_and_a_wrong_type(
        tmp_path: Path) -> None:
    """The draft is typed (a TypedDict with read-only items), so mypy, which CI runs strict
    on broker/, catches what the runtime check above catches only when the line runs."""
    misuse = tmp_path / "misuse.py"
    misuse.write_text(_MISUSE)
    out, _, status = mypy.api.run(["--strict", "--no-incremental", "--follow-imports=silent",
                                   str(misuse)])
    assert status == 1, out
    assert 'ReadOnly TypedDict key "decision"' in out, out
    assert '"egress_ofset"' in out, out
    assert 'event_offset' in out, out
    assert '"str"' in out, out


def test_the_entry_bytes_are_the_same_as_an_in_place_edit_gave() -> None:
    schema = _schema()
    base = draft("decide", trace_id="t" * 32, start_ms=1, recipient="r", purpose="p")
    edited: dict[str, object] = dict(base)  # what the backends did before: edit the dict in place
    edited["data_subjects"] = SUBJECTS
    edited["egress_offset"] = 7
    stepped = at_offset(with_subjects(base, SUBJECTS), 7)
    assert seal(schema, stepped, 1, GENESIS, 5).data == \
        seal(schema, edited, 1, GENESIS, 5).data
