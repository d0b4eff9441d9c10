"""Properties of the policy engine over random valid events, decision times and theme states.

(a) A release has exactly the fields its view schema declares, and they encode with it;
    scope conditions never release one event to two wijken's boa's by mistake.
(b) Canary: a unique value planted in a string field reaches a recipient only through a
    rule that keeps that field. It never reaches the egress of a plan that withholds or
    transforms it, the consume output, the audit log or the logs; neither does a value in
    an unknown (dropped) field, nor any raw BSN in the audit log.
"""

from __future__ import annotations

import copy
import json
import logging
import sqlite3
import sys
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from broker import logs
from broker.app.service import Broker
from broker.clock import from_millis, local_date, to_millis
from broker.config import load_settings
from broker.policy.control import ControlState, ThemeSwitch
from broker.policy.covenant import load_covenant
from broker.policy.decision import DecisionContext, Release, Withhold
from broker.policy.plan import compile_plans
from tests.unit import strategies as gen
from tests.unit.strategies import POLICY_FILE, REGISTRY, decoded, fixed_key

COVENANT = load_covenant(POLICY_FILE)
PLANS = compile_plans(COVENANT, REGISTRY, fixed_key)
WITHHOLD_CODES = {"covenant_not_yet_valid", "covenant_expired", "out_of_scope",
                  "condition_not_met", "too_old", "not_yet_valid", "expired", "theme_off"}
DAY_MS = gen.DAY_MS

# Instants where decisions change: the covenant's first and last local day, DST nights.
BOUNDARIES = [to_millis(datetime.fromisoformat(t)) for t in (
    "2020-04-28T21:59:59.999+00:00", "2020-04-28T22:00:00+00:00",
    "2026-03-28T23:00:00+00:00", "2026-10-25T00:59:59.999+00:00",
    "2026-12-31T22:59:59.999+00:00", "2026-12-31T23:00:00+00:00",
)]


def decision_times() -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(BOUNDARIES), st.integers(gen.EARLIEST_MS, gen.LATEST_MS))


@st.composite
def control_states(draw: st.DrawFn, now_ms: int) -> ControlState:
    """Theme switches around the decision time, recorded in random order."""
    count = draw(st.integers(0, 4))
    offsets = draw(st.lists(st.integers(-20 * DAY_MS, DAY_MS), min_size=count, max_size=count))
    states = draw(st.lists(st.booleans(), min_size=count, max_size=count))
    seqs = draw(st.permutations(range(1, count + 1)))
    return ControlState.fold([ThemeSwitch("woninginbraak", on, now_ms + offset, seq)
                              for on, offset, seq in zip(states, offsets, seqs, strict=True)])


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[str, dict[str, Any], DecisionContext]:
    now_ms = draw(decision_times())
    event_type, obj = draw(gen.any_event(anchor_ms=now_ms))
    now = from_millis(now_ms)
    ctx = DecisionContext(now, now_ms, local_date(now, COVENANT.zone),
                          draw(control_states(now_ms)))
    return event_type, obj, ctx


# -- (a) releases fit their views --------------------------------------------------------------
@settings(max_examples=250, deadline=None)
@given(scenarios())
def test_every_release_has_exactly_its_view_fields_and_encodes(
        scenario: tuple[str, dict[str, Any], DecisionContext]) -> None:
    event_type, obj, ctx = scenario
    record = decoded(event_type, obj)  # the strategies' events are valid input
    untouched = copy.deepcopy(record)
    plans = PLANS.plans_for(event_type)
    assert plans, f"the covenant names {event_type}"
    for plan in plans:
        decision = plan.evaluate(record, ctx)
        assert decision == plan.evaluate(record, ctx)  # a pure function of (event, context)
        if isinstance(decision, Withhold):
            assert decision.code in WITHHOLD_CODES
            assert decision.reason
            continue
        event(f"released {plan.purpose}")
        declared = [field["name"] for field in plan.view_schema.raw["fields"]]
        assert list(decision.view) == declared
        payload = plan.view_schema.encode(decision.view)
        assert plan.view_schema.decode(payload) == decision.view
        assert decision.fields_released == plan.fields_released
        assert decision.fields_withheld == plan.fields_withheld
    assert record == untouched  # evaluating never changes the event


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_wijk_scope_of_the_boas(scenario: tuple[str, dict[str, Any], DecisionContext]) -> None:
    event_type, obj, ctx = scenario
    record = decoded(event_type, obj)
    released = {(p.purpose, p.recipient) for p in PLANS.plans_for(event_type)
                if isinstance(p.evaluate(record, ctx), Release)}
    boas = {r for _, r in released if r.startswith("boa-hor-")}
    if event_type == "politie.woninginbraak":
        # one burglary goes to the boa of its own wijk, and to no other boa
        assert boas <= {f"boa-hor-{record['address']['wijk']}"}
    elif event_type == "om.gebiedsverbod" and ("handhaving-gebiedsverbod",
                                                "interventieteam") in released:
        # when the ban is current, exactly the boa's of the banned wijken get it
        assert boas == {f"boa-hor-{w}" for w in record["area"]["wijken"]}
    else:
        assert not boas


# -- (b) canary --------------------------------------------------------------------------------
def _string_paths(event_type: str) -> list[str]:
    out = []
    for path, info in REGISTRY.get(event_type).fields.items():
        if info.avro_type == "string" or (isinstance(info.avro_type, dict)
                                          and info.avro_type.get("type") == "array"
                                          and info.avro_type.get("items") == "string"):
            out.append(path)
    return out


STRING_PATHS = {event_type: _string_paths(event_type) for event_type in gen.EVENT_TYPES}
BSN_PATHS = ("victim.bsn", "suspect.bsn", "person.bsn")


def kept_by(purpose: str, path: str) -> bool:
    """Does a rule of the purpose copy `path` unchanged into its view?"""
    for name, rule in COVENANT.purposes[purpose].fields.items():
        source = rule.source or name
        if rule.transform == "keep" and (path == source or path.startswith(source + ".")):
            return True
    return False


def value_at(obj: dict[str, Any], path: str) -> Any:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def test_every_string_field_can_carry_a_canary() -> None:
    assert "victim.bsn" in STRING_PATHS["politie.woninginbraak"]
    assert "stolen_goods" in STRING_PATHS["politie.woninginbraak"]
    assert "risk_notes" in STRING_PATHS["om.detentie_uitstroom"]
    assert "area.streets" in STRING_PATHS["om.gebiedsverbod"]
    assert "boa_id" in STRING_PATHS["gemeente.boa_waarneming"]
    assert "event_id" not in STRING_PATHS["gemeente.boa_waarneming"]  # a uuid, not free text
    # a withheld string field is one the canary can be planted in
    for plan in PLANS.all:
        withheld_strings = [p for p in plan.fields_withheld if p in STRING_PATHS[plan.event_type]]
        for path in withheld_strings:
            assert not kept_by(plan.purpose, path)


def audit_table_bytes(db: sqlite3.Connection) -> list[bytes]:
    """Every value of every audit table (entries, tree, checkpoints, indexes) as bytes."""
    tables = [r[0] for r in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'audit%'")]
    assert "audit" in tables
    out: list[bytes] = []
    for table in tables:
        for row in db.execute(f"SELECT * FROM {table}"):
            out.extend(v if isinstance(v, bytes) else str(v).encode() for v in row)
    return out


@pytest.fixture
def debug_logs() -> Iterator[None]:
    """Undo what broker.logs.configure changes globally, so later tests start clean."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    hooks = sys.excepthook, threading.excepthook
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)
    sys.excepthook, threading.excepthook = hooks


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_canary_never_leaks(capfd: pytest.CaptureFixture[str], debug_logs: None,
                            data: st.DataObject) -> None:
    capfd.readouterr()  # start each example with empty captures
    logs.configure(level="debug", fmt="json")
    now_ms = data.draw(st.integers(gen.EARLIEST_MS + 120 * DAY_MS,
                                   to_millis(datetime(2026, 12, 20, tzinfo=UTC))), "now_ms")
    now = from_millis(now_ms)
    event_type, obj = data.draw(gen.any_event(anchor_ms=now_ms), "event")
    path = data.draw(st.sampled_from(STRING_PATHS[event_type]), "path")
    canary = data.draw(st.uuids().map(lambda u: f"KANARIE{u.hex}"), "canary")
    dropped = data.draw(st.uuids().map(lambda u: f"WEGGEGOOID{u.hex}"), "dropped canary")
    is_array = isinstance(REGISTRY.get(event_type).fields[path].avro_type, dict)
    if is_array:
        current = value_at(obj, path) or []
        gen.plant(event_type, obj, path, [*current, canary])
    else:
        gen.plant(event_type, obj, path, canary)
    obj["opmerking_intern"] = dropped
    bsns = [v for p in BSN_PATHS if isinstance(v := value_at(obj, p), str)]
    theme_on = data.draw(st.booleans(), "theme on")

    source, short_type = event_type.split(".", 1)
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(load_settings(overrides={"data_dir": tmp}, environ={}))
        try:
            if theme_on:
                broker.switch_theme("woninginbraak", True, now - timedelta(days=1))
            report = broker.ingest(source, short_type,
                                   [("line 1", json.dumps(obj).encode())], now)
            assert report.accepted == 1, report.quarantined
            assert report.dropped_fields == [("line 1", ["opmerking_intern"])]
            rendered: list[tuple[str, str, str, str]] = []
            for when in (now, now + timedelta(days=400)):  # the later read sweeps expiries
                for recipient in COVENANT.recipients:
                    for delivered in broker.consume(recipient, None, 0, when):
                        rendered.append((delivered.purpose, delivered.recipient,
                                         delivered.kind,
                                         json.dumps(delivered.as_json(), ensure_ascii=False)))
        finally:
            broker.close()
        db = sqlite3.connect(Path(tmp) / "broker.db")
        try:
            egress = db.execute("SELECT purpose, recipient, kind, payload FROM egress").fetchall()
            audit = [bytes(row[0]) for row in db.execute("SELECT entry FROM audit")]
            audit_tables = audit_table_bytes(db)
            stored = [bytes(row[0]) for row in db.execute("SELECT payload FROM store")]
        finally:
            db.close()

    needle, needle_dropped = canary.encode(), dropped.encode()
    for purpose, recipient, kind, payload in egress:
        plan = PLANS.plan(event_type, purpose, recipient)
        assert plan is not None
        exposed = kind == "record" and kept_by(purpose, path)
        if path in plan.fields_withheld:
            assert not exposed
        event(f"{'kept' if exposed else 'withheld'} by a release")
        # egress at rest (personal fields may be sealed): never where the rule withholds
        if not exposed:
            assert needle not in payload, (purpose, recipient, kind, path)
        assert needle_dropped not in payload
    # what the recipient reads: the canary exactly where a keep rule releases the field
    for purpose, recipient, kind, text in rendered:
        exposed = kind == "record" and kept_by(purpose, path)
        assert (canary in text) is exposed, (purpose, recipient, kind, path)
        assert dropped not in text
    assert len(audit) >= len(PLANS.plans_for(event_type))
    for entry in [*audit, *audit_tables]:
        assert needle not in entry
        assert needle_dropped not in entry
        for bsn in bsns:
            assert bsn.encode() not in entry
    assert stored
    assert all(needle_dropped not in payload for payload in stored)
    out, err = capfd.readouterr()
    assert '"event": "ingested"' in err  # debug-level JSON logs were captured
    for text in (out, err):
        assert canary not in text
        assert dropped not in text
        for bsn in bsns:
            assert bsn not in text
