"""In-process pipeline throughput against the serialization floor, measured in one run.

The pipeline: Avro single-object input -> validate -> seal personal fields -> store ->
decide every plan -> encode and seal views -> audit append (SQLite, one transaction per
batch). The floor, on the same inputs: fastavro-decode each input once and encode each
released view once, nothing else. Pinned to one core; the median of several runs, with
floor and pipeline runs interleaved so that noise hits both alike.

The hot path, on the same inputs and interleaved with the same floor: the CPU the broker
adds on top of serialization, nothing durable. The broker's own `Decider` (decode each
input with the registry's codec, the audit's subject pseudonyms, every plan's conditions
and transforms incl. keyed pseudonymisation, default deny, each released view encoded by
the compiled writer, the commitment to its bytes, one audit draft per decision; with
`seal_egress=False`) and the broker's `AuditSequencer` (entry encoding, chain hash, Merkle
leaf and frontier, a signed checkpoint every N entries) with the frontier in memory: no
SQLite, no sealing at rest. Its variants (always measured, the same broker code):
  audit_per_event      one audit entry per event instead of one per decision (the first
                       decision's entry kept: a lower bound for a grouped entry)
  no_audit             decide and encode only (an upper bound)
  no_pseudonymisation  plans compiled with the pseudonymise transform as str()
  gc_relaxed           the cyclic GC as in the pipeline's gc_relaxed variant

Then, in the same process:
  stages    one instrumented run per --runs: exclusive µs/event per stage (decode, every
            plan, view encode, sealing, audit seal and append, SQLite commits ...); the
            instrumentation adds overhead, so the table shows its own total beside the
            uninstrumented one
  variants  (--variants) bench-only switches that turn one design choice off, to show what
            it costs; the broker itself is untouched and semantics never change:
              no_sealing          personal fields stored and held in clear
              audit_per_event     one audit entry per event instead of one per decision
              no_tree_nodes       Merkle nodes not stored (frontier kept in memory)
              no_audit            no audit entries at all (an upper bound)
              synchronous_normal  SQLite WAL with synchronous=NORMAL instead of FULL
              gc_relaxed          the cyclic GC with gen0 threshold 50000 and the start-up
                                  objects frozen (a process setting `serve` could make)

    python bench/pipeline_bench.py [--events 4000] [--runs 5] [--variants] [--hot-only]

Writes bench/results/pipeline.json (gitignored).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import broker.app.service
import broker.audit.entries
import broker.audit.sequencer
import broker.pipeline.decide
import broker.pipeline.triage
from broker.app.demo import DAY, DaySynth
from broker.app.service import Broker
from broker.audit.entries import GENESIS, Draft, at_offset, new_trace_id
from broker.audit.sequencer import AuditSequencer
from broker.audit.sqlite_store import SqliteAudit
from broker.audit.tree import Frontier
from broker.backends.embedded.event_log import SqliteEventLog
from broker.clock import to_millis
from broker.config import load_settings
from broker.crypto.sealing import Fresh, Sealer
from broker.logs import configure
from broker.model import codec
from broker.model.json_input import Limits, convert
from broker.model.schemas import Schema, SchemaRegistry
from broker.pipeline.decide import DecideCounts, Decider
from broker.pipeline.ingest import validate
from broker.pipeline.port import StoredEvent
from broker.policy import transforms
from broker.policy.decision import DecisionContext, Release
from broker.policy.plan import Plan, compile_plans

RESULTS = Path(__file__).resolve().parent / "results"
Inputs = list[tuple[str, str, bytes]]
Setup = Callable[[Broker], None]


def make_inputs(broker: Broker, count: int, seed: int) -> Inputs:
    """The sample covenant's event mix as Avro single-object messages."""
    synth = DaySynth(random.Random(seed))
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
    rng = random.Random(seed)
    for _ in range(count):
        pick = rng.random()
        chosen = makers[-1]
        for maker in makers:
            if pick < maker[0]:
                chosen = maker
                break
            pick -= maker[0]
        _, source, event_type, make = chosen
        schema = broker.registry.get(event_type)
        record = convert(schema.raw, make(), Limits()).record
        out.append((source, event_type, schema.encode(record)))
    return out


def released_views(broker: Broker, inputs: Inputs) -> list[tuple[Any, dict[str, Any]]]:
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


def floor_run(broker: Broker, inputs: Inputs, views: list[tuple[Any, dict[str, Any]]]
              ) -> tuple[float, float, float]:
    """(decode seconds, encode seconds, CPU seconds): fastavro straight, nothing else."""
    cpu = time.process_time()
    started = time.perf_counter()
    for _, _, data in inputs:
        header = codec.split_header(data)
        assert header is not None
        schema = broker.registry.by_fingerprint[header[0]]
        codec.decode_payload(header[1], schema.parsed)
    decoded = time.perf_counter()
    for schema, view in views:
        codec.encode(schema.parsed, schema.fingerprint, view)  # fastavro's own writer
    return decoded - started, time.perf_counter() - decoded, time.process_time() - cpu


def pipeline_run(inputs: Inputs, batch: int, setup: Setup | None = None
                 ) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, views released) of one run on a fresh data directory."""
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        broker = Broker(load_settings(overrides={"data_dir": tmp}, environ={}))
        if setup is not None:
            setup(broker)
        now = DAY + timedelta(hours=18)
        by_type: dict[tuple[str, str], list[tuple[str, bytes]]] = {}
        for i, (source, event_type, data) in enumerate(inputs):
            by_type.setdefault((source, event_type), []).append((f"m{i}", data))
        cpu = time.process_time()
        started = time.perf_counter()
        released = 0
        for (source, event_type), items in by_type.items():
            for i in range(0, len(items), batch):
                report = broker.ingest(source, event_type, items[i:i + batch], now)
                released += report.decided.released
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        broker.close()
    return elapsed, cpu, released


# -- per-stage instrumentation ------------------------------------------------------------

Label = str | Callable[[str | None], str | None]


class Stages:
    """Exclusive wall time per stage: a wrapped call's time, minus its wrapped callees'.

    A label may depend on the caller's stage (the same `Sealer.seal` is "seal store" at
    ingest and "seal egress" in a release); None keeps the time in the caller's stage.
    """

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.stack: list[list[Any]] = []  # [label, started, child seconds]
        self.patches: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, name: str, label: Label) -> None:
        raw = vars(owner).get(name)
        timed = self.timed(getattr(owner, name), label)
        self.patches.append((owner, name, raw))
        setattr(owner, name, staticmethod(timed) if isinstance(raw, staticmethod) else timed)

    def wrap_entry_writer(self, label: Label) -> None:
        """The audit entry writer the sequencer gets from `entry_writer` (a closure per
        schema), timed as `label`; on a tree before it existed, nothing."""
        made = getattr(broker.audit.sequencer, "entry_writer", None)
        if made is None:
            return
        self.patches.append((broker.audit.sequencer, "entry_writer", made))
        broker.audit.sequencer.entry_writer = (  # type: ignore[attr-defined]
            lambda schema: self.timed(made(schema), label))

    def timed(self, original: Callable[..., Any], label: Label) -> Callable[..., Any]:
        stages = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            parent = stages.stack[-1][0] if stages.stack else None
            stage = label(parent) if callable(label) else label
            if stage is None:
                return original(*args, **kwargs)
            frame = [stage, time.perf_counter(), 0.0]
            stages.stack.append(frame)
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - frame[1]
                stages.stack.pop()
                stages.totals[stage] = stages.totals.get(stage, 0.0) + elapsed - frame[2]
                if stages.stack:
                    stages.stack[-1][2] += elapsed

        return timed

    def restore(self) -> None:
        for owner, name, raw in reversed(self.patches):
            if raw is None:  # an instance attribute over a class method
                delattr(owner, name)
            else:
                setattr(owner, name, raw)
        self.patches.clear()


def _under(mapping: dict[str | None, str | None], default: str | None = None) -> Label:
    return lambda parent: mapping.get(parent, default)


def instrument(stages: Stages, b: Broker) -> None:
    """Wrap the hot path of broker `b` (classes and this instance's plans)."""
    w = stages.wrap
    w(Broker, "ingest", "ingest: other")
    w(broker.pipeline.triage, "validate", "validate: checks + re-encode")
    w(SchemaRegistry, "decode_single_object", _under({"validate: checks + re-encode":
                                                     "decode input"}))
    w(Sealer, "seal", _under({"ingest: other": "seal store (AES-GCM)",
                              "release: commitment, record": "seal egress (AES-GCM)"}))
    if hasattr(Sealer, "seal_fresh"):  # the triage's sealing at rest, plaintext kept
        w(Sealer, "seal_fresh", "seal store (AES-GCM)")
    w(Sealer, "flush", "key store flush (SQLite)")
    w(SqliteEventLog, "append_ingest", "store append (SQLite)")
    w(SqliteEventLog, "duplicate_ids", "duplicate check (SQLite)")
    w(SqliteEventLog, "read_store", "store read (SQLite)")
    w(Broker, "decide_pending", "decide: other")
    w(Decider, "open", "open stored event (unseal)")
    w(Decider, "_precheck", "plan prechecks (retention, erased)")
    w(Decider, "_release", "release: commitment, record")
    w(Decider, "_audit", "audit draft")
    w(Schema, "encode", _under({"release: commitment, record": "encode view",
                                "audit seal: chain + leaf + tree": "audit encode"}))
    w(AuditSequencer, "seal", "audit seal: chain + leaf + tree")
    stages.wrap_entry_writer("audit encode")
    w(SqliteAudit, "_insert", "audit rows insert (SQLite)")
    w(SqliteAudit, "_frontier", "audit frontier + checkpoint")
    w(SqliteAudit, "_maybe_checkpoint", "audit frontier + checkpoint")
    w(SqliteEventLog, "commit_decisions", "commit: egress rows, position, fsync")
    w(Broker, "sweep_expiries", "maintenance: expiry, key retention")
    w(Broker, "destroy_expired_keys", "maintenance: expiry, key retention")
    for plan in b.plans.all:
        w(plan, "evaluate", f"plan {plan.purpose} -> {plan.recipient}")


def staged_run(inputs: Inputs, batch: int) -> tuple[float, dict[str, float]]:
    stages = Stages()
    try:
        elapsed, _, _ = pipeline_run(inputs, batch, lambda b: instrument(stages, b))
    finally:
        stages.restore()
    return elapsed, stages.totals


# -- bench-only variants: one design choice switched off ----------------------------------

@contextmanager
def patched(*patches: tuple[Any, str, Any]) -> Iterator[None]:
    saved = [(owner, name, owner.__dict__[name]) for owner, name, _ in patches]
    try:
        for owner, name, value in patches:
            setattr(owner, name, value)
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


def _plain_seal(self: Sealer, schema: Schema, record: dict[str, Any], *args: Any,
                **kwargs: Any) -> bytes:
    return schema.encode(record)


def _plain_seal_fresh(self: Sealer, schema: Schema, record: dict[str, Any], *args: Any,
                      **kwargs: Any) -> tuple[bytes, Fresh]:
    """The triage's sealing (seal once: the plaintext kept for the decision), sealing
    nothing: the event as plain Avro, whose stored form the decision then need not open."""
    return schema.encode(record), Fresh(schema, record, ())


_original_append = SqliteAudit.append


def _one_per_event(self: SqliteAudit, db: Any, drafts: list[Any]) -> Any:
    seen: set[Any] = set()
    kept = []
    for d in drafts:
        key = d.get("event_offset") if d["name"] == "decide" else None
        if key is None or key not in seen:
            kept.append(d)
            seen.add(key)
    return _original_append(self, db, kept)


_original_insert = SqliteAudit._insert
_frontiers: dict[int, Any] = {}


def _insert_no_nodes(self: SqliteAudit, db: Any, sealed: list[Any]) -> None:
    for s in sealed:
        object.__setattr__(s, "nodes", [])
    _original_insert(self, db, sealed)


def _frontier_in_memory(self: SqliteAudit, db: Any, size: int) -> Any:
    from broker.audit.tree import Frontier  # noqa: PLC0415

    frontier = _frontiers.get(id(self))
    if frontier is None or frontier.size != size:
        frontier = _frontiers[id(self)] = Frontier(0, [])
        assert size == 0, "the no_tree_nodes variant needs a fresh log"
    return frontier


def _synchronous_normal(b: Broker) -> None:
    assert isinstance(b.log, SqliteEventLog)
    b.log.db.execute("PRAGMA synchronous=NORMAL")
    b.data_keys.db.execute("PRAGMA synchronous=NORMAL")


@contextmanager
def gc_relaxed() -> Iterator[None]:
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


Variant = tuple[tuple[tuple[Any, str, Any], ...], Setup | None, Callable[[], Any] | None]
VARIANTS: dict[str, Variant] = {
    "no_sealing": (((Sealer, "seal", _plain_seal), (Sealer, "seal_fresh", _plain_seal_fresh)),
                   None, None),
    "audit_per_event": (((SqliteAudit, "append", _one_per_event),), None, None),
    "no_tree_nodes": (((SqliteAudit, "_insert", _insert_no_nodes),
                       (SqliteAudit, "_frontier", _frontier_in_memory)), None, None),
    "no_audit": (((SqliteAudit, "append", lambda self, db, drafts: []),), None, None),
    "synchronous_normal": ((), _synchronous_normal, None),
    "gc_relaxed": ((), None, gc_relaxed),
}


# -- the in-process hot path: decide, pseudonymise, encode, audit; nothing durable ---------
#
# The broker's own objects on the same inputs: `Decider.decide` (decode each stored input
# with the registry's codec, the subject pseudonyms, every plan's conditions and transforms
# incl. keyed pseudonymisation, default deny, each released view encoded by the compiled
# writer, the commitment to its bytes, one audit draft per decision) with
# `seal_egress=False`, then `AuditSequencer.seal` (entry encoding, chain hash, Merkle leaf,
# frontier, a signed checkpoint every N entries) with the frontier in memory. What the
# bench adds is what a backend's commit adds before sealing: the egress offsets per stream.
# No SQLite, no sealing at rest.

@dataclass
class HotPath:
    decider: Decider
    sequencer: AuditSequencer
    ctx: DecisionContext
    events: list[StoredEvent]


def hot_path(b: Broker, inputs: Inputs, decider: Decider | None = None) -> HotPath:
    """The inputs as the decider reads them from the store (plain Avro, not sealed)."""
    assert isinstance(b.log, SqliteEventLog)
    now = DAY + timedelta(hours=18)
    events = []
    for i, (source, event_type, data) in enumerate(inputs):
        ok = validate(data, source, event_type, b.registry, b.limits)
        events.append(StoredEvent(i, event_type, source, ok.event_id, data, new_trace_id(),
                                  to_millis(now)))
    decider = decider or Decider(b.plans, b.registry, b.keys, b.sealer, seal_egress=False)
    return HotPath(decider, b.log.audit.sequencer, b.context(now), events)


def unpseudonymised(b: Broker) -> Decider:
    """The same plans with the pseudonymise transform as str(): the no_pseudonymisation cap."""
    def plain(key: bytes) -> Callable[[Any], Any]:
        return lambda value: None if value is None else str(value)

    with patched((transforms, "pseudonymise", plain)):
        plans = compile_plans(b.covenant, b.registry, b.keys.pseudonym_key)
    return Decider(plans, b.registry, b.keys, b.sealer, seal_egress=False)


def hot_run(hot: HotPath, batch: int, audit: str = "per_decision"
            ) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, views released); audit: per_decision (the broker),
    per_event, none."""
    decide, seal = hot.decider.decide, hot.sequencer.seal
    size, prev, frontier = 0, GENESIS, Frontier()
    offsets: dict[tuple[str, str], int] = {}
    counts = DecideCounts()
    events = hot.events
    cpu = time.process_time()
    started = time.perf_counter()
    for i in range(0, len(events), batch):
        decided = decide(events[i:i + batch], hot.ctx, "decide", counts)
        drafts = []
        for eg in decided.egress:  # what a backend's commit does before sealing
            key = (eg.recipient, eg.purpose)
            offset = offsets.get(key, 0)
            offsets[key] = offset + 1
            drafts.append(at_offset(eg.audit, offset))
        drafts.extend(decided.audits)
        if audit == "none":
            continue
        if audit == "per_event":  # one entry per event: a bound on a grouped entry's cost
            first: dict[int, Draft] = {}
            for d in drafts:
                first.setdefault(d["event_offset"], d)
            drafts = list(first.values())
        sealed = seal(size, prev, frontier, drafts)
        size, prev = size + len(sealed), sealed[-1].entry_hash
    return time.perf_counter() - started, time.process_time() - cpu, counts.released


def instrument_hot(stages: Stages, hot: HotPath) -> None:
    """Wrap the hot path's classes and the module functions it calls by name."""
    w = stages.wrap
    w(Decider, "decide", "decide: other")
    w(Decider, "open", "open: other")
    w(SchemaRegistry, "decode_single_object", "decode input (fastavro)")
    w(Sealer, "subjects", "subject pseudonyms (HMAC)")
    w(Decider, "_precheck", "plan prechecks (retention, erased)")
    w(Plan, "evaluate", "plans: conditions + transforms")
    w(Decider, "_release", "release: other")
    if "_commit" in vars(hot.decider):  # the decider's keyed commitment, set up once
        w(hot.decider, "_commit", "release commitment (HMAC)")
    elif hasattr(broker.pipeline.decide, "commitment"):  # a tree before it was
        w(broker.pipeline.decide, "commitment", "release commitment (HMAC)")
    w(Decider, "_audit", "audit draft")
    w(Schema, "encode", _under({"release: other": "encode view",
                                "audit entry: dict copy + SHA-256": "audit encode"}))
    w(AuditSequencer, "seal", "audit seal: other (index row, loop)")
    if hasattr(broker.audit.sequencer, "seal"):  # a tree before the entry writer
        w(broker.audit.sequencer, "seal", "audit entry: dict copy + SHA-256")
    stages.wrap_entry_writer("audit encode")
    for module in (broker.audit.sequencer, broker.audit.entries):  # wherever it is called
        if hasattr(module, "leaf_hash"):
            w(module, "leaf_hash", "audit leaf hash (SHA-256)")
    w(Frontier, "push", "audit frontier push")
    w(broker.audit.sequencer, "subject_keys", "audit subject keys")
    w(AuditSequencer, "sign", "audit checkpoint sign")


def hot_round(hot: HotPath, plain: HotPath, batch: int, views: int,
              times: dict[str, list[float]]) -> None:
    """One interleaved round of the hot path and its variants."""
    seconds, cpu, released = hot_run(hot, batch)
    assert released == views, "the hot path released other views than the floor"
    times["hot_path"].append(seconds)
    times["hot_path_cpu"].append(cpu)
    times["audit_per_event"].append(hot_run(hot, batch, "per_event")[0])
    times["no_audit"].append(hot_run(hot, batch, "none")[0])
    times["no_pseudonymisation"].append(hot_run(plain, batch)[0])
    with gc_relaxed():
        times["gc_relaxed"].append(hot_run(hot, batch)[0])


def hot_staged_run(hot: HotPath, batch: int) -> tuple[float, dict[str, float]]:
    stages = Stages()
    instrument_hot(stages, hot)
    try:
        elapsed, _, _ = hot_run(hot, batch)
    finally:
        stages.restore()
    return elapsed, stages.totals


HOT_VARIANTS = ("audit_per_event", "no_audit", "no_pseudonymisation", "gc_relaxed")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--core", type=int, default=0)
    parser.add_argument("--variants", action="store_true", help="measure the design caps")
    parser.add_argument("--hot-only", action="store_true",
                        help="the floor and the in-process hot path only (no durable runs)")
    parser.add_argument("--out", type=Path, default=RESULTS / "pipeline.json")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    configure("warning")  # the per-batch "ingested" lines would time stderr, not the broker
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.core})
    durable = not args.hot_only
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-setup-") as tmp:
        setup = Broker(load_settings(overrides={"data_dir": tmp}, environ={}))
        inputs = make_inputs(setup, args.events, seed=7)
        views = released_views(setup, inputs)
        hot = hot_path(setup, inputs)
        plain = hot_path(setup, inputs, unpseudonymised(setup))
        floors, runs = [], []
        variant_runs: dict[str, list[float]] = {name: [] for name in VARIANTS}
        hot_times: dict[str, list[float]] = {
            name: [] for name in ("hot_path", "hot_path_cpu", *HOT_VARIANTS)}
        staged: list[tuple[float, dict[str, float]]] = []
        hot_staged: list[tuple[float, dict[str, float]]] = []
        if durable:
            pipeline_run(inputs[:200], args.batch)  # warm up imports and caches
        hot_run(hot, args.batch)
        for _ in range(args.runs):  # interleaved: noise hits floor and pipeline alike
            floors.append(floor_run(setup, inputs, views))
            hot_round(hot, plain, args.batch, len(views), hot_times)
            if durable:
                runs.append(pipeline_run(inputs, args.batch)[:2])
                staged.append(staged_run(inputs, args.batch))
            if durable and args.variants:
                for name, (patches, hook, context) in VARIANTS.items():
                    with patched(*patches), (context or contextlib.nullcontext)():
                        variant_runs[name].append(pipeline_run(inputs, args.batch, hook)[0])
            hot_staged.append(hot_staged_run(hot, args.batch))
        setup.close()
    n = len(inputs)
    floor = statistics.median(d + e for d, e, _ in floors)
    floor_cpu = statistics.median(c for _, _, c in floors)
    hot_s = statistics.median(hot_times.pop("hot_path"))
    hot_cpu = statistics.median(hot_times.pop("hot_path_cpu"))

    def us(seconds: float) -> float:
        return round(seconds / n * 1e6, 1)

    def per_stage(totals: list[tuple[float, dict[str, float]]]) -> dict[str, float]:
        labels = {label for _, t in totals for label in t}
        found = {label: us(statistics.median(t.get(label, 0.0) for _, t in totals))
                 for label in labels}
        return dict(sorted(found.items(), key=lambda kv: -kv[1]))

    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                    "pinned_core": args.core},
        "events": n, "released_views": len(views), "runs": args.runs, "batch": args.batch,
        "floor_events_per_s": round(n / floor), "floor_us_per_event": us(floor),
        "floor_decode_us_per_event": us(statistics.median(d for d, _, _ in floors)),
        "floor_encode_us_per_event": us(statistics.median(e for _, e, _ in floors)),
        "hot_path_events_per_s": round(n / hot_s), "hot_path_us_per_event": us(hot_s),
        "ratio_hot_path_to_floor": round(floor / hot_s, 3),
        "floor_cpu_us_per_event": us(floor_cpu), "hot_path_cpu_us_per_event": us(hot_cpu),
        "ratio_hot_path_cpu": round(floor_cpu / hot_cpu, 3),
        "hot_path_instrumented_us_per_event": us(statistics.median(e for e, _ in hot_staged)),
        "hot_path_stages_us_per_event": per_stage(hot_staged),
        "hot_path_variants": {
            name: {"us_per_event": us(statistics.median(times)),
                   "ratio_to_floor": round(floor / statistics.median(times), 3),
                   "saves_us_per_event": round(us(hot_s) - us(statistics.median(times)), 1)}
            for name, times in hot_times.items()},
    }
    if durable:
        pipe = statistics.median(wall for wall, _ in runs)
        pipe_cpu = statistics.median(cpu for _, cpu in runs)
        result |= {
            "pipeline_events_per_s": round(n / pipe), "pipeline_us_per_event": us(pipe),
            "ratio_pipeline_to_floor": round(floor / pipe, 3),
            # CPU time is steadier on a shared machine; fsync waits are not in it
            "pipeline_cpu_us_per_event": us(pipe_cpu),
            "ratio_cpu": round(floor_cpu / pipe_cpu, 3),
            "instrumented_us_per_event": us(statistics.median(e for e, _ in staged)),
            "stages_us_per_event": per_stage(staged),
        }
        if args.variants:
            result["variants"] = {
                name: {"us_per_event": us(statistics.median(times)),
                       "ratio_to_floor": round(floor / statistics.median(times), 3),
                       "saves_us_per_event": round(us(pipe) - us(statistics.median(times)), 1)}
                for name, times in variant_runs.items()}
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    report(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


def report(result: dict[str, Any]) -> None:
    print(f"{'measure':40} {'value':>12}")
    for key, value in result.items():
        if not isinstance(value, dict):
            print(f"{key:40} {value:>12}")
    tables = (("hot path stage (exclusive, instrumented)", "hot_path_stages_us_per_event"),
              ("pipeline stage (exclusive, instrumented)", "stages_us_per_event"))
    for title, key in tables:
        if key in result:
            print(f"\n{title:60} {'µs/event':>9}")
            for label, value in result[key].items():
                print(f"{label:60} {value:>9}")
            print(f"{'sum (instrumented total)':60} {sum(result[key].values()):>9.1f}")
    for title, key in (("hot path variant", "hot_path_variants"),
                       ("pipeline variant (bench-only)", "variants")):
        if key in result:
            print(f"\n{title:30} {'µs/event':>9} {'ratio':>7} {'saves':>7}")
            for name, v in result[key].items():
                print(f"{name:30} {v['us_per_event']:>9} {v['ratio_to_floor']:>7} "
                      f"{v['saves_us_per_event']:>7}")


if __name__ == "__main__":
    main()
