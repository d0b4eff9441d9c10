"""Kafka authorizer denials as audit entries, on lines captured from a real secured node.

tests/fixtures/kafka_authorizer/secured-node.log is a slice of a Kafka 4.x node's log
(deploy/kafka/launcher.py, secure=True, ACLs from `acl apply`), with five denials: politie
asking for om's ingress topic (a producer's metadata request), boa-hor-noord twice for
boa-hor-oost's egress topic, boa-hor-noord writing its own egress topic, politie reading
its own ingress topic.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker.app.service import Broker
from broker.backends.kafka import acl_denials
from broker.backends.kafka.acl import PrincipalMap
from broker.backends.kafka.acl_denials import DenialCounts, audit_lines, auditor_for, parse_denial
from broker.cli import main
from broker.clock import parse_instant

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "kafka_authorizer" / "secured-node.log"
NOW = parse_instant("2026-05-10T12:00:00Z")


def lines() -> list[str]:
    return FIXTURE.read_text().splitlines()


def denial_lines() -> list[str]:
    return [line for line in lines() if "is Denied operation" in line]


def audit_entries(broker: Broker) -> list[dict[str, object]]:
    schema = broker.registry.get("records.audit_entry")
    return [schema.decode(data) for _, data in broker.log.audit_rows()]


def test_every_captured_denial_parses_and_keeps_no_host() -> None:
    parsed = [parse_denial(line) for line in denial_lines()]
    assert len(parsed) == 5
    assert all(parsed)
    first = parsed[0]
    assert first is not None
    assert (
        first.principal,
        first.operation,
        first.resource_type,
        first.resource_name,
        first.request,
        first.rule,
    ) == (
        "User:politie",
        "DESCRIBE",
        "TOPIC",
        "covenant.ingress.om.gebiedsverbod",
        "Metadata",
        "DefaultDeny",
    )
    assert first.logged_at is not None
    assert first.logged_at.startswith("20")
    assert "127.0.0.1" not in repr(parsed)
    assert [p.operation for p in parsed if p] == [
        "DESCRIBE",
        "DESCRIBE",
        "DESCRIBE",
        "WRITE",
        "READ",
    ]


def test_a_log4j_formatted_line_parses_too() -> None:
    message = denial_lines()[0].split(" - ", 1)[1]
    denial = parse_denial(f"[2026-05-10 12:00:00,123] INFO {message} (kafka.authorizer.logger)")
    assert denial is not None
    assert denial.rule == "DefaultDeny"
    assert denial.logged_at == "2026-05-10 12:00:00,123"


def test_the_captured_denials_become_entries(broker: Broker) -> None:
    counts = DenialCounts()
    drafts = audit_lines(auditor_for(broker, PrincipalMap()), lines(), 1000, counts)
    assert (counts.lines, counts.denials, counts.unparseable, counts.ignored) == (
        len(lines()),
        5,
        0,
        0,
    )
    by_topic = {(d["name"], d["detail"]["topic"]): d for d in drafts}
    assert len(drafts) == 4  # the two identical egress denials are one entry, count 2
    wrong = by_topic[("write_refused", "covenant.ingress.om.gebiedsverbod")]
    assert (wrong["reason_code"], wrong["source"], wrong["event_type"], wrong["decision"]) == (
        "wrong_principal",
        "om",
        "om.gebiedsverbod",
        "refused",
    )
    assert wrong["detail"]["principal"] == "User:politie"
    assert wrong["detail"]["party"] == "politie"
    assert wrong["detail"]["owner"] == "om"
    assert wrong["detail"]["operation"] == "DESCRIBE"
    other = by_topic[("access", "covenant.egress.boa-hor-oost.surveillance-woninginbraak")]
    assert (other["recipient"], other["reason_code"], other["detail"]["count"]) == (
        "boa-hor-noord",
        "not_authorized",
        "2",
    )
    write = by_topic[("write_refused", "covenant.egress.boa-hor-noord.surveillance-woninginbraak")]
    assert write["detail"]["operation"] == "WRITE"
    assert write["source"] is None
    read = by_topic[("access", "covenant.ingress.politie.woninginbraak")]
    assert read["detail"]["operation"] == "READ"
    assert read["event_type"] == "politie.woninginbraak"
    assert not any("127.0.0.1" in json.dumps(d) for d in drafts)


def test_the_owners_own_principal_refused_is_not_a_wrong_principal(broker: Broker) -> None:
    line = denial_lines()[0].replace("User:politie", "User:om")
    drafts = audit_lines(auditor_for(broker, PrincipalMap()), [line], 1000, DenialCounts())
    assert [d["reason_code"] for d in drafts] == ["not_authorized"]


def test_a_principal_map_names_the_party(broker: Broker) -> None:
    principals = PrincipalMap(sources={"politie": "User:CN=politie-feed"})
    line = denial_lines()[0].replace("User:politie", "User:CN=politie-feed")
    [entry] = audit_lines(auditor_for(broker, principals), [line], 1000, DenialCounts())
    assert entry["detail"]["party"] == "politie"
    assert entry["reason_code"] == "wrong_principal"


def test_other_deployments_topics_and_groups_are_ignored(broker: Broker) -> None:
    line = denial_lines()[0]
    others = [
        line.replace("covenant.ingress.", "other.ingress."),
        line.replace(
            "Topic:LITERAL:covenant.ingress.om.gebiedsverbod", "Group:LITERAL:boa-hor-oost"
        ),
    ]
    counts = DenialCounts()
    assert audit_lines(auditor_for(broker, PrincipalMap()), others, 1000, counts) == []
    assert counts.ignored == 2


@pytest.mark.parametrize("cut", [40, 80, 120, 160])
def test_a_damaged_denial_line_is_counted_not_fatal(broker: Broker, cut: int) -> None:
    good = denial_lines()[0]
    damaged = good[: good.index("Principal") + cut]
    counts = DenialCounts()
    drafts = audit_lines(
        auditor_for(broker, PrincipalMap()), [damaged, "\x00\xff garbage", good], 1000, counts
    )
    assert len(drafts) == 1
    assert counts.unparseable == (1 if "is Denied operation" in damaged else 0)


def test_reading_is_idempotent_and_survives_rotation(broker: Broker, tmp_path: Path) -> None:
    log = tmp_path / "kafka.log"
    log.write_text("\n".join(lines()[:10]) + "\n")
    principals = PrincipalMap()
    first = acl_denials.audit_denials(broker, log, principals, NOW)
    with log.open("a") as handle:  # the rest, the last line not yet finished
        rest = lines()[10:]
        handle.write("\n".join(rest[:-1]) + "\n" + rest[-1][:30])
    second = acl_denials.audit_denials(broker, log, principals, NOW)
    again = acl_denials.audit_denials(broker, log, principals, NOW)
    assert again.lines == 0
    assert again.entries == 0
    with log.open("a") as handle:
        handle.write(rest[-1][30:] + "\n")
    third = acl_denials.audit_denials(broker, log, principals, NOW)
    assert first.denials + second.denials + third.denials == 5
    refused = [e for e in audit_entries(broker) if e["decision"] == "refused"]
    assert len(refused) == first.entries + second.entries + third.entries
    # rotated: a new file under the same name starts again from its beginning
    log.write_text(denial_lines()[0] + "\n")
    rotated = acl_denials.audit_denials(broker, log, principals, NOW)
    assert rotated.restarted
    assert rotated.entries == 1
    assert broker.verify_audit().ok


def test_cli_audit_denials(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data-dir", str(tmp_path / "data"), "--now", "2026-05-10T12:00:00Z"]
    assert main([*data, "--json", "acl", "audit-denials", "--log", str(FIXTURE)]) == 0
    first = json.loads(capsys.readouterr().out)
    assert (first["denials"], first["entries"]) == (5, 4)
    assert main([*data, "--json", "acl", "audit-denials", "--log", str(FIXTURE)]) == 0
    assert json.loads(capsys.readouterr().out)["entries"] == 0  # read on from where it was
    assert main([*data, "audit", "verify"]) == 0
    assert main([*data, "acl", "audit-denials", "--log", str(tmp_path / "missing")]) == 2
