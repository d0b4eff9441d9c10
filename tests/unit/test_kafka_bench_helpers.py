"""The pure helpers of bench/kafka_bench.py: how a window's rate, a percentile, the spread of
ratios and records per input are computed (the bench itself is not a test: no timings here)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st


def _load() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "bench" / "kafka_bench.py"
    spec = importlib.util.spec_from_file_location("kafka_bench", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("kafka_bench", module)
    spec.loader.exec_module(module)
    return module


kb = _load()


def test_window_rate_times_commit_steps_not_window_edges() -> None:
    # commits of 500 at t = 1, 2, 3, 4, 5 (sampled every 0.25 s); the window [1.5, 4.6]
    # holds the steps at 2, 3 and 4: 1000 inputs in 2 s, not 1500 in 3.1 s
    samples = [(t / 4, 500 * int(t / 4)) for t in range(0, 24)]
    assert kb.window_rate(samples, 1.5, 4.6) == pytest.approx(500.0)


def test_window_rate_ignores_steps_outside_the_window() -> None:
    samples = [(0.0, 0), (1.0, 100), (2.0, 200), (3.0, 10_000), (4.0, 10_100)]
    assert kb.window_rate(samples, 0.5, 2.5) == pytest.approx(100.0)


def test_window_rate_needs_two_steps() -> None:
    assert kb.window_rate([(0.0, 0), (1.0, 500), (2.0, 500)], 0.0, 2.0) is None
    assert kb.window_rate([], 0.0, 1.0) is None


@given(st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=1,
                max_size=200), st.floats(min_value=0.0, max_value=1.0))
def test_percentile_is_an_element_and_monotone(values: list[float], q: float) -> None:
    got = kb.percentile(values, q)
    assert got in values
    assert kb.percentile(values, 0.0) <= got <= kb.percentile(values, 1.0) == max(values)


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert kb.percentile(values, 0.5) == 50.0
    assert kb.percentile(values, 0.99) == 99.0
    assert kb.percentile([7.0], 0.99) == 7.0
    with pytest.raises(ValueError, match="no values"):
        kb.percentile([], 0.5)


def test_ratio_spread() -> None:
    assert kb.ratio_spread([0.10, 0.11, 0.09]) == pytest.approx(0.11 / 0.09)
    assert kb.ratio_spread([0.2]) is None
    assert kb.ratio_spread([0.2, 0.0]) is None


def test_families_and_records_per_input() -> None:
    prefix = "bench1234."
    assert [kb.family_of(prefix + t, prefix) for t in (
        "store", "egress.gemeente.zorg", "audit", "keys", "quarantine", "control",
        "expiry")] == ["store", "egress", "audit", "keys", "quarantine", "other", "other"]
    counts = {"store": 100, "egress": 187, "audit": 475, "keys": 100, "other": 2}
    got = kb.per_input(counts, 100)
    assert got["audit"] == 4.75
    assert got["quarantine"] == 0.0
    assert got["total"] == 8.64
    with pytest.raises(ValueError, match="no inputs"):
        kb.per_input(counts, 0)


def test_audit_entries_from_headers_without_decoding() -> None:
    # one entry per record: the seq span; a batch record declaring its entries: their sum
    assert kb.audit_entries({0: (0, 99), 1: (5, 14)}, None) == 110
    assert kb.audit_entries({0: (0, 3)}, 40) == 40


def test_inputs_needed_has_a_floor_and_a_margin() -> None:
    assert kb.inputs_needed(1000.0, 10.0) == 15_000
    assert kb.inputs_needed(1.0, 1.0) == 500
