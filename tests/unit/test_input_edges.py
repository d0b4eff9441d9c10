"""Input edges (issue 15 items 8 and 12): keys written twice, bounded limits, future instants.

A JSON event with two `address` objects was routed by the last one; a config with a key
twice passed; limits had no upper bound; a `reported_at` in the year 9999 passed every
max_age condition (a negative age). Each is now refused with its own reason, naming the
key or field and never its value.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker import cli
from broker.app.service import Broker
from broker.clock import iso_instant, parse_instant, to_millis
from broker.config import load_settings
from broker.errors import ConfigError, InvalidEvent
from broker.model.json_input import Limits, loads_unique, past_instant_paths
from broker.pipeline.ingest import validate
from tests import factories as f
from tests.unit.strategies import REGISTRY

NOW = parse_instant("2026-05-10T12:00:00Z")


def quarantined(broker: Broker, event_type: str, *lines: dict[str, Any] | str,
                now: Any = NOW) -> list[tuple[str, str]]:
    report = broker.ingest(event_type.split(".", 1)[0], event_type, f.lines(*lines), now)
    return [(q.reason_code, q.reason) for q in report.quarantined]


# -- item 8: duplicate keys --------------------------------------------------------------------

def test_an_event_with_two_address_objects_is_quarantined_not_routed_by_the_last(
        broker: Broker) -> None:
    event = json.dumps(f.woninginbraak())
    noord = '"address": {"street": "Dorpsstraat", "house_number": "12", "postcode": ' \
            '"1181 ZM", "city": "Amstelveen", "wijk": "noord"}'
    assert noord in event
    twice = event.replace(noord, noord + ", " + noord.replace("noord", "oost"))
    assert quarantined(broker, "politie.woninginbraak", twice) == [
        ("duplicate_key", "address: written twice in one object")]
    assert broker.consume("boa-hor-oost", None, 0, NOW) == []
    assert broker.consume("boa-hor-noord", None, 0, NOW) == []


def test_a_key_written_twice_deep_inside_is_named_by_its_path_never_its_value(
        broker: Broker) -> None:
    event = json.dumps(f.woninginbraak())
    bsn = '"bsn": "111222333"'
    assert event.count(bsn) == 1
    twice = event.replace(bsn, bsn + ', "bsn": "999888777"')
    ((code, reason),) = quarantined(broker, "politie.woninginbraak", twice)
    assert (code, reason) == ("duplicate_key", "victim.bsn: written twice in one object")
    assert "111222333" not in reason
    assert "999888777" not in reason


def test_a_duplicate_inside_an_array_element_is_named_with_its_index() -> None:
    with pytest.raises(InvalidEvent) as caught:
        loads_unique('{"a": [1, {"b": 1}, {"c": {"d": 1, "d": 2}}]}')
    assert caught.value.reason == "a[2].c.d: written twice in one object"


# JSON values as text, written by hand so that an object may hold a key twice.
KEYS = st.sampled_from(["a", "b", "c", "wijk", "é", "a.b"])
leaves = (st.none() | st.booleans() | st.integers(-10**9, 10**9)
          | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5))
Tree = Any  # ("leaf", v) | ("list", [Tree]) | ("obj", [(key, Tree)])
trees: st.SearchStrategy[Tree] = st.recursive(
    leaves.map(lambda v: ("leaf", v)),
    lambda inner: st.lists(inner, max_size=4).map(lambda xs: ("list", xs))
    | st.lists(st.tuples(KEYS, inner), max_size=4).map(lambda ps: ("obj", ps)),
    max_leaves=25)


def text_of(tree: Tree) -> str:
    kind, body = tree
    if kind == "leaf":
        return json.dumps(body)
    if kind == "list":
        return "[" + ", ".join(text_of(x) for x in body) + "]"
    return "{" + ", ".join(f"{json.dumps(k)}: {text_of(v)}" for k, v in body) + "}"


def has_duplicate(tree: Tree) -> bool:
    kind, body = tree
    if kind == "leaf":
        return False
    if kind == "list":
        return any(has_duplicate(x) for x in body)
    keys = [k for k, _ in body]
    return len(set(keys)) != len(keys) or any(has_duplicate(v) for _, v in body)


@given(trees)
def test_a_duplicated_key_at_any_depth_is_refused_else_the_parse_is_json_loads(
        tree: Tree) -> None:
    text = text_of(tree)
    if has_duplicate(tree):
        with pytest.raises(InvalidEvent) as caught:
            loads_unique(text)
        assert caught.value.code == "duplicate_key"
    else:
        assert loads_unique(text) == json.loads(text)


@given(trees, st.lists(st.one_of(KEYS.map(lambda k: ("key", k)),
                                 st.integers(0, 3).map(lambda i: ("index", i))), max_size=6),
       KEYS, trees, trees)
def test_a_key_planted_twice_anywhere_is_named_by_its_path(
        sibling: Tree, route: list[tuple[str, Any]], key: str, first: Tree,
        second: Tree) -> None:
    """Wrap an object with `key` twice in objects and arrays along `route`; the reason names
    exactly that path (siblings before it on the way hold no duplicates)."""
    if has_duplicate(sibling) or has_duplicate(first) or has_duplicate(second):
        sibling, first, second = ("leaf", 1), ("leaf", 2), ("leaf", 3)
    node: Tree = ("obj", [(key, first), (key, second)])
    path = key
    for kind, step in reversed(route):
        if kind == "key":
            other = "x"  # not among KEYS: no sibling key repeats the step
            node = ("obj", [(other, sibling), (step, node)])
            path = step + ("" if path.startswith("[") else ".") + path
        else:
            node = ("list", [sibling] * step + [node])
            path = f"[{step}]" + ("" if path.startswith("[") else ".") + path
    with pytest.raises(InvalidEvent) as caught:
        loads_unique(text_of(node))
    assert caught.value.reason == f"{path}: written twice in one object"


def test_a_config_with_a_key_twice_fails_config_check(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "broker.yaml"
    config.write_text("limits:\n  max_event_bytes: 1024\n  max_event_bytes: 99999\n")
    code = cli.main(["--config", str(config), "config", "check"])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.strip() == (f"{config}: not valid YAML at line 3 column 3: key "
                           "'max_event_bytes' is written twice in one mapping")


def test_a_json_config_with_a_key_twice_is_refused_too(tmp_path: Path) -> None:
    config = tmp_path / "broker.json"  # JSON is YAML: the same loader reads it
    config.write_text('{"log_level": "info", "log_level": "debug"}')
    with pytest.raises(ConfigError, match="'log_level' is written twice"):
        load_settings(config, environ={})


@pytest.mark.parametrize(("text", "key", "bound"), [
    ("limits:\n  max_string_bytes: 1048577\n", "limits.max_string_bytes", 1048576),
    ("limits:\n  max_event_bytes: 1000000000000\n", "limits.max_event_bytes", 16777216),
    ("decide_batch_size: 100001\n", "decide_batch_size", 100000),
    ("max_clock_skew_s: 86400\n", "max_clock_skew_s", 3600),
    ("kafka:\n  max_batch: 10000000\n", "kafka.max_batch", 100000),
])
def test_limits_above_their_bound_are_refused_naming_file_key_and_bound(
        tmp_path: Path, text: str, key: str, bound: int) -> None:
    config = tmp_path / "broker.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={})
    assert str(caught.value) == f"{config}:{key}: Input should be less than or equal to {bound}"


def test_limits_at_their_bound_are_accepted(tmp_path: Path) -> None:
    config = tmp_path / "broker.yaml"
    config.write_text("limits:\n  max_string_bytes: 1048576\n  max_event_bytes: 16777216\n"
                      "decide_batch_size: 100000\nmax_clock_skew_s: 3600\n")
    settings = load_settings(config, environ={})
    assert settings.limits.max_event_bytes == 16 * 1024 * 1024


# -- item 12: instants from the future ---------------------------------------------------------

def test_a_reported_at_in_the_year_9999_is_quarantined_as_from_the_future(
        broker: Broker) -> None:
    event = f.woninginbraak(reported_at="9999-01-01T00:00:00Z")
    assert quarantined(broker, "politie.woninginbraak", event) == [
        ("from_the_future", "reported_at: lies more than 300 s after the ingest time; it "
         "records when something happened")]
    assert broker.consume("boa-hor-noord", None, 0, NOW) == []


@pytest.mark.parametrize("field", ["occurred_from", "occurred_until"])
def test_every_marked_instant_is_bounded(broker: Broker, field: str) -> None:
    event = f.woninginbraak(**{field: iso_instant(NOW + timedelta(days=1))})
    assert [c for c, _ in quarantined(broker, "politie.woninginbraak", event)] == [
        "from_the_future"]


def test_the_bound_is_the_clock_skew_after_the_ingest_time(broker: Broker) -> None:
    inside = f.woninginbraak(reported_at=iso_instant(NOW + timedelta(seconds=300)))
    outside = f.woninginbraak(reported_at=iso_instant(NOW + timedelta(seconds=300.001)))
    assert quarantined(broker, "politie.woninginbraak", inside, outside) == [
        ("from_the_future", "reported_at: lies more than 300 s after the ingest time; it "
         "records when something happened")]


def test_the_clock_skew_is_configurable(make_broker: Callable[..., Broker]) -> None:
    broker = make_broker(max_clock_skew_s=3600)
    event = f.woninginbraak(reported_at=iso_instant(NOW + timedelta(minutes=30)))
    assert quarantined(broker, "politie.woninginbraak", event) == []


def test_a_date_far_ahead_is_not_an_instant_and_stays_accepted(broker: Broker) -> None:
    ban = f.gebiedsverbod(valid_until="2099-12-31")
    assert quarantined(broker, "om.gebiedsverbod", ban) == []


def test_an_avro_event_from_the_future_is_quarantined_too(broker: Broker) -> None:
    schema = REGISTRY.get("gemeente.boa_waarneming")
    plain = validate(f.jsonl(f.boa_waarneming()).strip(), "gemeente",
                     "gemeente.boa_waarneming", REGISTRY, Limits())
    record = {**plain.record, "observed_at": parse_instant("9999-01-01T00:00:00Z")}
    report = broker.ingest("gemeente", "gemeente.boa_waarneming",
                           [("message 1", schema.encode(record))], NOW)
    assert [(q.reason_code, q.reason) for q in report.quarantined] == [
        ("from_the_future", "observed_at: lies more than 300 s after the ingest time; it "
         "records when something happened")]


def test_validate_without_the_ingest_time_does_not_bound_instants() -> None:
    """The keyword is optional, so call sites that do not pass it yet keep working."""
    raw = json.dumps(f.woninginbraak(reported_at="9999-01-01T00:00:00Z")).encode()
    args = ("politie", "politie.woninginbraak", REGISTRY, Limits())
    assert validate(raw, *args).record["reported_at"].year == 9999
    with pytest.raises(InvalidEvent, match="from_the_future"):
        validate(raw, *args, now_ms=to_millis(NOW))


def test_the_instants_that_record_when_something_happened_are_marked() -> None:
    marked = {name: past_instant_paths(REGISTRY.get(name).raw) for name in (
        "politie.woninginbraak", "om.gebiedsverbod", "om.detentie_uitstroom",
        "gemeente.boa_waarneming")}
    assert marked == {
        "politie.woninginbraak": [("reported_at",), ("occurred_from",), ("occurred_until",)],
        "om.gebiedsverbod": [("decided_at",)],
        "om.detentie_uitstroom": [("notified_at",)],
        "gemeente.boa_waarneming": [("observed_at",)],
    }
