"""The `--require-signed` rule, in one place for both backends (broker/audit/verify.py)."""

from __future__ import annotations

from broker.audit.verify import AuditReport, pending_verdict, verdict

SIGNED = AuditReport(entries=10, head="h", root="r", checkpoints=2, signed_size=10,
                     problem=None)
TAIL = AuditReport(entries=12, head="h", root="r", checkpoints=2, signed_size=10,
                   problem=None)
BROKEN = AuditReport(entries=12, head="h", root="r", checkpoints=1, signed_size=8,
                     problem="entry 9: prev_hash does not chain")


def test_unsigned_entries_fail_only_with_require_signed() -> None:
    assert verdict(TAIL, require_signed=False).ok
    strict = verdict(TAIL, require_signed=True)
    assert strict.problem == ("entry 10: 2 entries after the last checkpoint are not "
                              "signed")
    assert strict.as_json()["ok"] is False
    assert strict.as_json()["unsigned_entries"] == 2
    assert verdict(SIGNED, require_signed=True).ok


def test_a_problem_found_stays_the_first_problem() -> None:
    assert verdict(BROKEN, require_signed=True).problem == BROKEN.problem
    assert pending_verdict("partition 0: entry 3: bad", 5, True) == "partition 0: entry 3: bad"


def test_pending_kafka_entries_fail_only_with_require_signed() -> None:
    assert pending_verdict(None, 5, False) is None
    assert pending_verdict(None, 0, True) is None
    assert pending_verdict(None, 5, True) == (
        "5 committed audit entries on Kafka are not integrated (so not signed) yet; run "
        "`covenant-broker audit integrate`")
