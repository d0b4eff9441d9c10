"""The event log port's contract, written once and run on every backend.

`PortContract` holds the tests; a backend's test module subclasses it and provides the
`port` fixture: a broker on that backend and a `release` step that lets the backend's own
pipeline store and decide input (embedded: `Broker.ingest`; Kafka: publish to ingress and
run `serve` until idle). The tests then speak to the assembled backend's capabilities
only. A test for an optional capability runs where the backend has it and is skipped
where it has not, so each backend reports which of them it was held to.

Embedded: tests/unit/test_port_contract.py. Kafka: tests/integration/test_kafka_port_contract.py.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from broker.app.service import Broker
from broker.audit.entries import Draft, draft
from broker.clock import parse_instant, to_millis
from broker.errors import StorageError
from broker.pipeline import expiry
from broker.pipeline.port import (
    DecisionBatch,
    NewEgress,
    NewEvent,
    Quarantined,
)
from broker.policy.control import ControlEvent
from tests import factories as f

NOW = parse_instant("2026-05-10T12:00:00Z")
NOW_MS = to_millis(NOW)
# A burglary in wijk noord at NOW is released to this stream (policies/*.yaml).
RECIPIENT, PURPOSE = "boa-hor-noord", "surveillance-woninginbraak"


@dataclass
class PortUnderTest:
    broker: Broker
    release: Callable[[list[dict[str, Any]]], None]  # the backend's pipeline decides these


def source_and_type(event: dict[str, Any]) -> tuple[str, str]:
    """The source and event type of a test event (tests/factories.py makes both kinds)."""
    return ("om", "om.gebiedsverbod") if "area" in event else ("politie",
                                                               "politie.woninginbraak")


def _marker_audit(marker: str) -> Draft:
    return draft("access", trace_id=None, start_ms=NOW_MS, recipient=RECIPIENT,
                 purpose=PURPOSE, detail={"marker": marker})


def _entries(broker: Broker) -> list[dict[str, Any]]:
    schema = broker.registry.get("records.audit_entry")
    return [schema.decode(data) for data in broker.log.audit_entries()]


def _markers(broker: Broker) -> list[str]:
    return [e["detail"].get("marker", "") for e in _entries(broker)
            if e["detail"] and "marker" in e["detail"]]


def _tombstones_for(broker: Broker, now: datetime, records: list[Any]) -> DecisionBatch:
    """A tombstone for each record, as an expiry sweep or an erasure writes them."""
    ctx = broker.context(now)
    plans = broker.decider_at(ctx).plans
    return DecisionBatch("expiry", -1, egress=[expiry.tombstone(
        r, plans, broker.registry.get("records.tombstone"), broker.keys.commitment_key(),
        ctx, cause="expired", after=ctx.today, decision="expire", reason_code="basis_ended",
        reason="contract test") for r in records])


class PortContract:
    """Subclass per backend and override `port`."""

    @pytest.fixture
    def port(self) -> PortUnderTest:
        raise NotImplementedError("a backend's contract module provides the port fixture")

    # -- every backend: audit appender ---------------------------------------------------
    def test_audit_entries_appended_are_returned_in_order(self, port: PortUnderTest) -> None:
        log = port.broker.log
        before = len(list(log.audit_entries()))
        log.append_audit([_marker_audit("one"), _marker_audit("two")], NOW_MS)
        log.append_audit([_marker_audit("three")], NOW_MS)
        assert len(list(log.audit_entries())) == before + 3
        assert _markers(port.broker) == ["one", "two", "three"]

    # -- every backend: control log ------------------------------------------------------
    def test_control_events_round_trip_with_their_document(self, port: PortUnderTest) -> None:
        log = port.broker.log
        document = b"covenant: {id: contract-test}\n"
        event = ControlEvent("covenant", "contract-test", "2:" + "ab" * 32, NOW_MS - 5,
                             NOW_MS)
        written = log.append_control(event, _marker_audit("control"), document)
        later = log.append_control(ControlEvent("key_rotation", PURPOSE, "2", NOW_MS, NOW_MS),
                                   _marker_audit("rotation"))
        assert later.seq > written.seq
        found = log.control_events()
        assert [(e.kind, e.name, e.value, e.effective_ms, e.recorded_ms, e.seq)
                for e in found[-2:]] == [
            ("covenant", "contract-test", event.value, NOW_MS - 5, NOW_MS, written.seq),
            ("key_rotation", PURPOSE, "2", NOW_MS, NOW_MS, later.seq)]
        assert log.document(hashlib.sha256(document).hexdigest()) == document
        assert log.document("00" * 32) is None
        assert _markers(port.broker)[-2:] == ["control", "rotation"]  # audited with it

    def test_theme_switches_round_trip_in_order(self, port: PortUnderTest) -> None:
        log = port.broker.log
        on = log.append_theme_switch("woninginbraak", True, NOW_MS, _marker_audit("on"),
                                     NOW_MS)
        off = log.append_theme_switch("woninginbraak", False, NOW_MS + 1,
                                      _marker_audit("off"), NOW_MS + 1)
        switches = log.theme_switches()
        assert switches[-2:] == [on, off]
        assert (off.theme, off.on, off.effective_ms) == ("woninginbraak", False, NOW_MS + 1)
        assert off.seq > on.seq
        # the same switches are control events too
        assert [(e.kind, e.value) for e in log.control_events()[-2:]] == [
            ("theme", "on"), ("theme", "off")]

    # -- every backend: store reader, egress reader, tombstone writer --------------------
    def test_released_events_are_stored_and_delivered(self, port: PortUnderTest) -> None:
        events = [f.woninginbraak(address={"wijk": "noord"}) for _ in range(2)]
        port.release(events)
        log = port.broker.log
        stored = log.read_store(-1, 100)
        assert sorted(s.event_id for s in stored) == sorted(e["event_id"] for e in events)
        assert [s.offset for s in stored] == sorted(s.offset for s in stored)
        assert log.read_store(stored[0].offset, 100) == stored[1:]  # strictly after
        assert log.read_store(stored[-1].offset, 100) == []
        assert log.read_store(stored[0].offset - 1, 1) == [stored[0]]  # one, by position
        records = log.read_egress(RECIPIENT, PURPOSE, 0)
        assert len(records) == 2
        assert {r.event_offset for r in records} == {s.offset for s in stored}
        assert all(r.kind == "record" and r.recipient == RECIPIENT for r in records)
        assert log.read_egress(RECIPIENT, PURPOSE, records[-1].offset + 1) == []
        assert PURPOSE in log.streams(RECIPIENT)
        assert log.streams("casusregisseur-dt") == []  # no record was released there
        assert log.quarantine_count() == 0

    def test_tombstones_end_released_records(self, port: PortUnderTest) -> None:
        port.release([f.woninginbraak(address={"wijk": "noord"}) for _ in range(2)])
        log = port.broker.log
        first, second = log.read_egress(RECIPIENT, PURPOSE, 0)
        keys = [(RECIPIENT, PURPOSE, first.offset), (RECIPIENT, PURPOSE, second.offset)]
        assert log.without_tombstone(keys) == [first, second]
        batch = _tombstones_for(port.broker, NOW, [first])
        written = log.write_tombstones(batch, NOW_MS)
        assert [(w.kind, w.event_offset) for w in written] == [("tombstone",
                                                               first.event_offset)]
        assert log.without_tombstone(keys) == [second]
        stream = log.read_egress(RECIPIENT, PURPOSE, 0)
        assert [r.kind for r in stream] == ["record", "record", "tombstone"]
        assert stream[-1].offset == written[0].offset

    def test_expiring_lists_records_past_their_basis_without_a_tombstone(
            self, port: PortUnderTest) -> None:
        ban = f.gebiedsverbod(valid_from="2026-05-01", valid_until="2026-05-31",
                              area={"wijken": ["noord"], "streets": ["Dorpsstraat"]})
        port.release([ban])
        log = port.broker.log
        assert log.expiring(parse_instant("2026-05-20T00:00:00Z").date()) == []
        due = log.expiring(parse_instant("2026-06-02T00:00:00Z").date())
        assert due
        assert all(r.kind == "record" and r.expires_on is not None for r in due)
        log.write_tombstones(_tombstones_for(port.broker, NOW, due), NOW_MS)
        assert log.expiring(parse_instant("2026-06-02T00:00:00Z").date()) == []

    def test_a_tombstone_batch_moves_no_position(self, port: PortUnderTest) -> None:
        log = port.broker.log
        before = len(list(log.audit_entries()))
        with pytest.raises(ValueError, match="no consumer position"):
            log.write_tombstones(DecisionBatch("decide", 3, audits=[_marker_audit("x")]),
                                 NOW_MS)
        assert len(list(log.audit_entries())) == before  # nothing written

    # -- optional: the synchronous store writer and decision sink ------------------------
    def test_store_writer_appends_and_finds_duplicates(self, port: PortUnderTest) -> None:
        writer = port.broker.backend.writer
        if writer is None:
            pytest.skip("this backend has no synchronous store writer (serve stores)")
        log = port.broker.log
        bad = Quarantined("politie", "politie.woninginbraak", "line 2", "invalid_json",
                          "not JSON", b"{not json", NOW_MS)
        stored = writer.append_ingest(
            [NewEvent("politie.woninginbraak", "politie", "id-1", b"one", "t1"),
             NewEvent("politie.woninginbraak", "politie", "id-2", b"two", "t2", "00-ab")],
            [bad], [_marker_audit("ingest")], NOW_MS)
        assert [(s.offset, s.event_id, s.payload, s.foreign_trace) for s in stored] == [
            (0, "id-1", b"one", None), (1, "id-2", b"two", "00-ab")]
        assert log.read_store(-1, 10) == stored
        assert log.quarantine_count() == 1
        assert _markers(port.broker)[-1] == "ingest"  # audited in the same write
        assert writer.duplicate_ids("politie.woninginbraak", ["id-2", "id-3"]) == {"id-2"}
        assert writer.duplicate_ids("politie.gebiedsverbod", ["id-2"]) == set()
        more = writer.append_ingest(
            [NewEvent("politie.woninginbraak", "politie", "id-3", b"three", "t3")], [], [],
            NOW_MS)
        assert [s.offset for s in more] == [2]

    def test_position_moves_only_with_committed_decisions(self,
                                                          port: PortUnderTest) -> None:
        sink = port.broker.backend.decisions
        if sink is None:
            pytest.skip("this backend has no decision sink (serve decides)")
        log = port.broker.log
        assert sink.position("contract") == -1
        sink.commit_decisions(DecisionBatch("contract", 4, audits=[_marker_audit("d")]),
                              NOW_MS)
        assert sink.position("contract") == 4
        assert sink.position("other") == -1
        with pytest.raises(StorageError, match="twice"):
            sink.commit_decisions(DecisionBatch("contract", 4), NOW_MS)
        # a batch whose audit entry cannot be written leaves no egress and no position
        broken = _marker_audit("broken")
        broken["recipient"] = 12345  # not a string: the audit encoder refuses it
        egress = NewEgress(RECIPIENT, PURPOSE, "politie.woninginbraak", "record", b"x", 5,
                           None, None, NOW_MS, broken)
        with pytest.raises(ValueError, match="recipient"):  # the audit encoder's refusal
            sink.commit_decisions(DecisionBatch("contract", 5, egress=[egress]), NOW_MS)
        assert sink.position("contract") == 4
        assert log.read_egress(RECIPIENT, PURPOSE, 0) == []

    def test_audit_chain_rows_are_the_entries_by_sequence(self, port: PortUnderTest) -> None:
        chain = port.broker.backend.chain
        if chain is None:
            pytest.skip("this backend keeps one audit chain per partition")
        port.broker.log.append_audit([_marker_audit("a"), _marker_audit("b")], NOW_MS)
        rows = list(chain.audit_rows())
        assert [seq for seq, _ in rows] == list(range(len(rows)))
        assert [data for _, data in rows] == list(port.broker.log.audit_entries())

    # -- optional: the asynchronous pipeline ---------------------------------------------
    def test_partition_chains_verify_what_was_appended(self, port: PortUnderTest) -> None:
        chains = port.broker.backend.partition_chains
        if chains is None:
            pytest.skip("this backend keeps one audit chain")
        port.broker.log.append_audit([_marker_audit("p1"), _marker_audit("p2")], NOW_MS)
        reports = chains.verify_audit_partitions()
        assert all(r.ok for r in reports.values()), reports
        assert sum(r.entries for r in reports.values()) == len(
            list(port.broker.log.audit_entries()))

    def test_ingress_publisher_produces_each_line(self, port: PortUnderTest) -> None:
        ingress = port.broker.backend.ingress
        if ingress is None:
            pytest.skip("this backend decides synchronously in ingest")
        lines = [(1, json.dumps(f.woninginbraak()).encode()), (2, b"{not json")]
        report = ingress.publish("politie", "politie.woninginbraak", lines)
        assert (report.source, report.event_type, report.produced) == (
            "politie", "politie.woninginbraak", 2)
        assert sum(report.partitions.values()) == 2

    def test_ingress_purge_purges_only_consumed_input(self, port: PortUnderTest) -> None:
        purge = port.broker.backend.purge
        if purge is None:
            pytest.skip("this backend keeps no raw input")
        assert purge.purge_consumed_ingress() == 0  # nothing consumed yet
        port.release([f.woninginbraak(address={"wijk": "noord"})])
        assert purge.purge_consumed_ingress() == 1  # the one partition serve consumed
