"""In-process pipeline throughput against the serialization floor, measured in one run.

The pipeline: Avro single-object input -> validate -> seal personal fields -> store ->
decide every plan -> encode and seal views -> audit append (SQLite, one transaction per
batch). The floor, on the same inputs: fastavro-decode each input once and encode each
released view once, nothing else. Pinned to one core; the median of several runs.

    python bench/pipeline_bench.py [--events 4000] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from broker.config import load_settings
from broker.demo import DAY, DaySynth
from broker.model import codec
from broker.model.json_input import Limits, convert
from broker.policy.decision import Release
from broker.runtime import Broker

RESULTS = Path(__file__).resolve().parent / "results"


def make_inputs(broker: Broker, count: int, seed: int) -> list[tuple[str, str, bytes]]:
    """The sample covenant's event mix as Avro single-object messages."""
    synth = DaySynth(random.Random(seed))  # noqa: S311 - synthetic data
    day = DAY.date()
    makers = [
        (0.55, "politie", "politie.woninginbraak",
         lambda: synth.woninginbraak(DAY + timedelta(hours=14))),
        (0.10, "om", "om.gebiedsverbod",
         lambda: synth.gebiedsverbod(day - timedelta(days=10), day + timedelta(days=60))),
        (0.10, "om", "om.detentie_uitstroom", synth.detentie),
        (0.25, "gemeente", "gemeente.boa_waarneming",
         lambda: synth.waarneming(DAY + timedelta(hours=12))),
    ]
    out = []
    rng = random.Random(seed)  # noqa: S311 - synthetic data
    for _ in range(count):
        pick = rng.random()
        for share, source, event_type, make in makers:
            if pick < share:
                break
            pick -= share
        schema = broker.registry.get(event_type)
        record = convert(schema.raw, make(), Limits()).record
        out.append((source, event_type, schema.encode(record)))
    return out


def released_views(broker: Broker, inputs: list[tuple[str, str, bytes]]
                   ) -> list[tuple[Any, dict[str, Any]]]:
    """(view schema, view) of every release, to encode in the floor."""
    ctx = broker.context(DAY + timedelta(hours=18))
    views = []
    for _, event_type, data in inputs:
        _, event = broker.registry.decode_single_object(data)
        for plan in broker.plans.plans_for(event_type):
            decision = plan.evaluate(event, ctx)
            if isinstance(decision, Release):
                views.append((plan.view_schema, decision.view))
    return views


def floor_run(broker: Broker, inputs: list[tuple[str, str, bytes]],
              views: list[tuple[Any, dict[str, Any]]]) -> float:
    started = time.perf_counter()
    for _, _, data in inputs:
        header = codec.split_header(data)
        assert header is not None
        schema = broker.registry.by_fingerprint[header[0]]
        codec.decode_payload(header[1], schema.parsed)
    for schema, view in views:
        schema.encode(view)
    return time.perf_counter() - started


def pipeline_run(inputs: list[tuple[str, str, bytes]], batch: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        broker = Broker(load_settings(overrides={"data_dir": tmp}, environ={}))
        now = DAY + timedelta(hours=18)
        by_type: dict[tuple[str, str], list[tuple[str, bytes]]] = {}
        for i, (source, event_type, data) in enumerate(inputs):
            by_type.setdefault((source, event_type), []).append((f"m{i}", data))
        started = time.perf_counter()
        released = 0
        for (source, event_type), items in by_type.items():
            for i in range(0, len(items), batch):
                report = broker.ingest(source, event_type, items[i:i + batch], now)
                released += report.decided.released
        elapsed = time.perf_counter() - started
        broker.close()
    return elapsed, released


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--core", type=int, default=0)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.core})
    with tempfile.TemporaryDirectory(prefix="bench-setup-") as tmp:
        setup = Broker(load_settings(overrides={"data_dir": tmp}, environ={}))
        inputs = make_inputs(setup, args.events, seed=7)
        views = released_views(setup, inputs)
        floors = [floor_run(setup, inputs, views) for _ in range(args.runs)]
        setup.close()
    runs = [pipeline_run(inputs, args.batch) for _ in range(args.runs)]
    floor = statistics.median(floors)
    pipe = statistics.median(r[0] for r in runs)
    n = len(inputs)
    result = {
        "events": n, "released_views": len(views), "runs": args.runs,
        "floor_events_per_s": round(n / floor), "floor_us_per_event": round(floor / n * 1e6, 1),
        "pipeline_events_per_s": round(n / pipe),
        "pipeline_us_per_event": round(pipe / n * 1e6, 1),
        "ratio_pipeline_to_floor": round(floor / pipe, 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(f"{'measure':32} {'value':>12}")
    for key, value in result.items():
        print(f"{key:32} {value:>12}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pipeline.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
