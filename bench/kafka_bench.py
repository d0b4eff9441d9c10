"""Kafka end to end on a local single-node Kafka: `covenant-broker serve` against a 1-record
kafka-python consume -> produce passthrough, in windows of steady throughput, interleaved.

Method (bench/README.md section 2 says the same in prose):
- every contender run gets a fresh deployment: its own topic prefix, group and data
  directory, the broker's own topic layout with --partitions partitions, and enough of the
  sample covenant's event mix (Avro single-object records keyed by event_id on their home
  partition, as `covenant-broker ingest` writes them) pre-produced that it cannot run dry:
  the last measured rate of that contender x (warm-up + window + tail) x 1.5; a run that
  caught up before its window ended is repeated once with more input;
- the contender runs in its own process pinned to --core (the 2-process scaling: two
  processes on cores 0 and 1); the bench polls the group's committed ingress offsets every
  50 ms. t0 = the first poll at which every partition index has a commit; the first
  --warmup seconds after t0 are discarded; the rate is taken over the next --window
  seconds, from the first to the last commit seen inside that window (commits are steps,
  so timing step to step avoids counting a part-batch);
- rounds: each round runs every contender once, in a fixed interleaved order (serve
  [--tree's serve first], passthrough, [fanout passthrough], 2 serve processes, ...);
- after each serve run its topics are read back read_committed and every record counted,
  per topic family (store, egress, audit, keys, quarantine, other), divided by the inputs
  the group committed;
- latency at a fixed rate: a paced producer in its own process (core 0) sends --rate
  events/s; a read_committed reader in this process times each input's first released
  egress record (serve) or its copy (passthrough); inputs sent in the --latency-window
  seconds after --latency-warmup seconds count.

    python bench/kafka_bench.py [--rounds 3] [--warmup 3] [--window 15] [--rate 300]
        [--tree ../before] [--fanout] [--runs-check] [--quick] [--bootstrap HOST:PORT]

Writes bench/results/kafka.json (gitignored). Roles this script runs as, in child processes:
    python bench/kafka_bench.py passthrough --config CONFIG --group G --out TOPIC ...
    python bench/kafka_bench.py pace --bootstrap ... --feed FILE --rate R --seconds S ...
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
DAY_NOW = "2026-05-12T18:00:00Z"  # the decision time pinned for serve (as the pipeline bench)
SESSION = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}
SAMPLE_S = 0.05
TAIL_S = 0.5  # the run goes on this long past its window, so the window's end is not its end
FAMILIES = ("store", "egress", "audit", "keys", "quarantine", "other")
Item = tuple[str, str, str, bytes]  # (source, event type, event_id, Avro single-object bytes)


# -- pure helpers (tests/unit/test_kafka_bench_helpers.py) -----------------------------------

def window_rate(samples: Sequence[tuple[float, int]], start: float,
                end: float) -> float | None:
    """Inputs/s over [start, end] from (time, committed) samples: from the first commit step
    seen in the window to the last one. None when the window holds fewer than two steps."""
    steps: list[tuple[float, int]] = []
    previous: int | None = None
    for t, value in samples:
        if previous is not None and value > previous and start <= t <= end:
            steps.append((t, value))
        previous = value
    if len(steps) < 2 or steps[-1][0] <= steps[0][0]:
        return None
    return (steps[-1][1] - steps[0][1]) / (steps[-1][0] - steps[0][0])


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 1]) of a non-empty sequence."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = math.ceil(q * len(ordered) - 1e-9)  # the tolerance: 0.99 * 100 is 99.00000000000001
    return ordered[min(len(ordered), max(1, rank)) - 1]


def ratio_spread(ratios: Sequence[float]) -> float | None:
    """max/min of the per-round ratios (1.0 = identical rounds); None below two rounds."""
    if len(ratios) < 2 or min(ratios) <= 0:
        return None
    return max(ratios) / min(ratios)


def family_of(topic: str, prefix: str) -> str:
    """The topic family of one of a deployment's topics (ingress topics are not counted)."""
    name = topic[len(prefix):] if topic.startswith(prefix) else topic
    head = name.split(".", 1)[0]
    return head if head in FAMILIES else "other"


def per_input(counts: dict[str, int], inputs: int) -> dict[str, float]:
    """Records per input for every family and their total."""
    if inputs <= 0:
        raise ValueError("no inputs committed")
    out = {f: round(counts.get(f, 0) / inputs, 3) for f in FAMILIES}
    out["total"] = round(sum(counts.get(f, 0) for f in FAMILIES) / inputs, 3)
    return out


def audit_entries(seqs_by_partition: dict[int, tuple[int, int]],
                  declared: int | None) -> int:
    """Audit entries behind the audit records, without decoding them: the sum of the
    `count` headers where the records carry one (a records.audit_batch record: the entries
    of one transaction), else the span of their `seq` headers per partition (exact for one
    entry per record, the form before batches)."""
    if declared is not None:
        return declared
    return sum(high - low + 1 for low, high in seqs_by_partition.values())


def inputs_needed(rate: float, seconds: float, margin: float = 1.5, floor: int = 500) -> int:
    return max(floor, int(rate * seconds * margin))


# -- the passthrough role (its own process) --------------------------------------------------

def run_passthrough(args: argparse.Namespace) -> None:
    """kafka-python consume -> produce, exactly once, with serve's own client settings
    (broker/backends/kafka/io.py Clients: the group consumer and transactional producers)."""
    from kafka.coordinator.assignors.roundrobin import (  # noqa: PLC0415 - the role's own
        RoundRobinPartitionAssignor,
    )
    from kafka.structs import OffsetAndMetadata  # noqa: PLC0415

    from broker.backends.kafka.io import Clients  # noqa: PLC0415
    from broker.config import load_settings  # noqa: PLC0415

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    settings = load_settings(Path(args.config), {"backend": "kafka"}, environ={})
    cfg = settings.kafka.model_copy(update={"group_id": args.group})
    clients = Clients(cfg)
    filler = os.urandom(args.filler_bytes)
    consumer = clients.group_consumer(RoundRobinPartitionAssignor)
    consumer.subscribe(args.topics.split(","))
    producers: dict[int, Any] = {}

    def producer(index: int) -> Any:
        if index not in producers:
            p = clients.transactional_producer(f"{args.group}-{index}",
                                               [args.out, args.fan_topic])
            p.init_transactions()
            producers[index] = p
        return producers[index]

    while not stop.is_set():
        batch = consumer.poll(timeout_ms=cfg.poll_timeout_ms)
        by_index: dict[int, dict[Any, list[Any]]] = {}
        for tp, records in batch.items():
            by_index.setdefault(tp.partition, {})[tp] = records
        for index, part in sorted(by_index.items()):
            p = producer(index)
            p.begin_transaction()
            offsets = {}
            for tp, records in part.items():
                for r in records:
                    origin = f"{tp.topic}:{tp.partition}:{r.offset}".encode()
                    p.send(args.out, r.value, key=r.key, partition=index,
                           headers=[("ingress", origin)])
                    for _ in range(args.fanout - 1):
                        p.send(args.fan_topic, filler, key=r.key, partition=index)
                offsets[tp] = OffsetAndMetadata(records[-1].offset + 1, "", -1)
            p.send_offsets_to_transaction(offsets, consumer.group_metadata())
            p.commit_transaction()
    for p in producers.values():
        p.close()
    consumer.close()


# -- the paced producer role (its own process) -----------------------------------------------

def run_pace(args: argparse.Namespace) -> None:
    """Send the feed at --rate events/s; write each record's send and ack times."""
    from broker.backends.kafka.pipeline import home_partition  # noqa: PLC0415

    items = [(s, t, e, bytes.fromhex(d)) for s, t, e, d in
             json.loads(Path(args.feed).read_text())]
    topics: dict[str, str] = json.loads(args.topics)
    p = bulk_producer(args.bootstrap, linger_ms=5)
    times: dict[str, list[float]] = {}
    lock = threading.Lock()

    def acked(at: float, md: Any) -> None:  # add_callback(f, at) calls f(at, metadata)
        with lock:
            times[f"{md.topic}:{md.partition}:{md.offset}"] = [at, time.time()]

    start = time.time()
    perf0 = time.perf_counter()
    for i, (source, event_type, event_id, data) in enumerate(items):
        delay = perf0 + i / args.rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        at = time.time()
        p.send(topics[event_type], data, key=event_id.encode(),
               partition=home_partition(event_id, args.partitions),
               headers=[("source", source.encode())]).add_callback(acked, at)
    p.flush()
    offered = len(items) / (time.perf_counter() - perf0)
    p.close()
    with lock:
        Path(args.out).write_text(json.dumps({"start": start, "offered_per_s": offered,
                                              "times": times}))


# -- deployments ---------------------------------------------------------------------------

def bulk_producer(bootstrap: str, linger_ms: int = 20) -> Any:
    from kafka import KafkaProducer  # noqa: PLC0415

    return KafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all",
                         linger_ms=linger_ms, batch_size=512 * 1024)


class Deployment:
    """A topic prefix, group and data directory of its own; the broker's topic layout."""

    def __init__(self, bootstrap: str, partitions: int, max_batch: int, root: Path) -> None:
        self.bootstrap = bootstrap
        self.partitions = partitions
        self.name = f"bench{uuid.uuid4().hex[:8]}"
        self.prefix = f"{self.name}."
        self.root = root / self.name
        self.root.mkdir(parents=True)
        self.config = self.root / "config.yaml"
        # Only keys every tree knows: --tree's serve reads this file too.
        self.kafka = {"bootstrap_servers": bootstrap, "topic_prefix": self.prefix,
                      "group_id": self.name, "partitions": partitions,
                      "max_batch": max_batch, "poll_timeout_ms": 200, **SESSION}
        self.config.write_text(json.dumps({"kafka": self.kafka, "log_level": "warning"}))
        from broker.app.service import Broker  # noqa: PLC0415
        from broker.config import load_settings  # noqa: PLC0415

        settings = load_settings(self.config, {"backend": "kafka",
                                               "data_dir": self.root / "data"}, environ={})
        broker = Broker(settings)  # creates the topics
        try:
            self.layout = broker.log.layout  # type: ignore[attr-defined]
            self.link = broker.log.link  # type: ignore[attr-defined]  # opens broker_link
            self.ingress = {t: self.layout.names.ingress(t) for t in broker.registry.event_types()}
        finally:
            broker.close()
        self.out = f"{self.prefix}passthrough"
        self.fan = f"{self.prefix}passthrough-fanout"
        self._admin(lambda a: a.create_topics(
            [_new_topic(t, self.partitions) for t in (self.out, self.fan)]))

    def _admin(self, call: Any) -> Any:
        from kafka import KafkaAdminClient  # noqa: PLC0415

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            return call(admin)
        finally:
            admin.close()

    def topics(self) -> list[str]:
        from kafka import KafkaConsumer  # noqa: PLC0415

        c = KafkaConsumer(bootstrap_servers=self.bootstrap)
        try:
            return sorted(t for t in c.topics() if t.startswith(self.prefix))
        finally:
            c.close()

    def drop(self) -> None:
        """Delete the deployment's topics: the node stays small over a long run."""
        with contextlib.suppress(Exception):
            self._admin(lambda a: a.delete_topics(self.topics()))

    def produce(self, items: Iterable[Item]) -> int:
        from broker.backends.kafka.pipeline import home_partition  # noqa: PLC0415

        p = bulk_producer(self.bootstrap)
        n = 0
        for source, event_type, event_id, data in items:
            p.send(self.ingress[event_type], data, key=event_id.encode(),
                   partition=home_partition(event_id, self.partitions),
                   headers=[("source", source.encode())])
            n += 1
        p.flush()
        p.close()
        return n


def _new_topic(name: str, partitions: int) -> Any:
    from kafka.admin import NewTopic  # noqa: PLC0415

    return NewTopic(name, partitions, 1)


@dataclass(frozen=True)
class Contender:
    name: str
    kind: str  # "serve" | "passthrough"
    tree: Path | None = None  # serve from another checkout
    processes: int = 1
    fanout: int = 1  # records the passthrough writes per input

    def commands(self, dep: Deployment, core: int) -> list[tuple[list[str], Path,
                                                                 dict[str, str]]]:
        cores = [core] if self.processes == 1 else list(range(self.processes))
        out = []
        for c in cores:
            pin = ["taskset", "-c", str(c)]
            if self.kind == "serve":
                python, cwd, env = sys.executable, REPO, dict(os.environ)
                if self.tree is not None:
                    own = self.tree / ".venv" / "bin" / "python"
                    python = str(own) if own.exists() else sys.executable
                    cwd = self.tree
                    env["PYTHONPATH"] = str(self.tree)
                out.append(([*pin, python, "-m", "broker.cli", "--backend", "kafka",
                             "--config", str(dep.config), "--data-dir",
                             str(dep.root / "data"), "--now", DAY_NOW, "serve"], cwd, env))
            else:
                out.append(([*pin, sys.executable, str(Path(__file__).resolve()),
                             "passthrough", "--config", str(dep.config),
                             "--group", self.group(dep),
                             "--topics", ",".join(sorted(dep.ingress.values())),
                             "--out", dep.out, "--fan-topic", dep.fan,
                             "--fanout", str(self.fanout)], REPO, dict(os.environ)))
        return out

    def group(self, dep: Deployment) -> str:
        return dep.name if self.kind == "serve" else f"{dep.name}-passthrough"


class Feed:
    """Unique inputs of the sample covenant's mix, made on demand (serve would deduplicate
    a repeated event_id; the passthrough may take the same inputs again)."""

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.seed = 7

    def take(self, count: int, unique: bool = True) -> list[Item]:
        if not unique and self.items:
            return [self.items[i % len(self.items)] for i in range(count)]
        while len(self.items) < count:
            self.items.extend(make_inputs(max(5000, count - len(self.items)), self.seed))
            self.seed += 1
        return self.items[:count]


def make_inputs(count: int, seed: int) -> list[Item]:
    from broker.app.service import Broker  # noqa: PLC0415
    from broker.config import load_settings  # noqa: PLC0415

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from pipeline_bench import make_inputs as mix  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="bench-kafka-inputs-") as tmp:
        broker = Broker(load_settings(overrides={"data_dir": tmp}, environ={}))
        try:
            out = []
            for source, event_type, data in mix(broker, count, seed=seed):
                _, record = broker.registry.decode_single_object(data)
                out.append((source, event_type, str(record["event_id"]).lower(), data))
        finally:
            broker.close()
    return out


# -- measuring ----------------------------------------------------------------------------

def committed_by_index(admin: Any, group: str, topics: set[str]) -> dict[int, int]:
    """Committed ingress offsets of the group, summed per partition index ({} before the
    group exists)."""
    from kafka.errors import KafkaError  # noqa: PLC0415

    try:
        offsets = admin.list_group_offsets(group).get(group) or {}
    except KafkaError:
        return {}
    out: dict[int, int] = {}
    for tp, o in offsets.items():
        if tp.topic in topics and o.offset > 0:
            out[tp.partition] = out.get(tp.partition, 0) + o.offset
    return out


@contextlib.contextmanager
def running(contender: Contender, dep: Deployment, core: int) -> Iterator[list[Any]]:
    # stderr to a file: a pipe nobody reads stops a chatty child once it is full
    logs = [(dep.root / f"{contender.name}-{i}.log").open("w+")
            for i in range(contender.processes)]
    procs = [subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                              stderr=log, text=True)
             for (cmd, cwd, env), log in zip(contender.commands(dep, core), logs, strict=True)]
    for proc, log in zip(procs, logs, strict=True):
        proc.args_log = log.name  # type: ignore[attr-defined]  # read by _check_alive
    try:
        yield procs
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()


def _check_alive(procs: list[Any], name: str) -> None:
    for proc in procs:
        if proc.poll() is not None:
            err = Path(proc.args_log).read_text()[-3000:]
            raise RuntimeError(f"{name} exited {proc.returncode}: {err}")


def load() -> float:
    return round(os.getloadavg()[0], 2)


def throughput_run(contender: Contender, bootstrap: str, feed: Feed, need: int,
                   opts: argparse.Namespace, root: Path) -> dict[str, Any]:
    """One contender run on a fresh deployment: rate over the window, dry or not, and for
    serve the records it wrote per input."""
    from kafka import KafkaAdminClient  # noqa: PLC0415

    dep = Deployment(bootstrap, opts.partitions, opts.max_batch, root)
    try:
        produced = dep.produce(feed.take(need, unique=contender.kind == "serve"))
        load_before = load()
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        topics = set(dep.ingress.values())
        group = contender.group(dep)
        samples: list[tuple[float, int]] = []
        t0: float | None = None
        started = time.monotonic()
        try:
            with running(contender, dep, opts.core) as procs:
                while True:
                    by_index = committed_by_index(admin, group, topics)
                    now = time.monotonic()
                    samples.append((now, sum(by_index.values())))
                    if t0 is None and len(by_index) == dep.partitions:
                        t0 = now
                    if t0 is not None and now >= t0 + opts.warmup + opts.window + TAIL_S:
                        break
                    if samples[-1][1] >= produced:
                        break  # ran dry; judged below
                    _check_alive(procs, contender.name)
                    if now - started > 180:
                        raise RuntimeError(f"{contender.name}: no steady commits after 180 s")
                    time.sleep(SAMPLE_S)
            final = sum(committed_by_index(admin, group, topics).values())
        finally:
            admin.close()
        assert t0 is not None
        start, end = t0 + opts.warmup, t0 + opts.warmup + opts.window
        rate = window_rate(samples, start, end)
        at_end = max((v for t, v in samples if t <= end), default=0)
        result: dict[str, Any] = {
            "inputs_per_s": round(rate) if rate else None,
            "dry": at_end >= produced or samples[-1][0] < end,
            "produced": produced, "committed_at_window_end": at_end,
            "startup_s": round(t0 - started, 2), "load_avg": [load_before, load()]}
        result["committed_at_stop"] = final
        return result
    finally:
        dep.drop()


def records_run(contender: Contender, bootstrap: str, feed: Feed, count: int,
                opts: argparse.Namespace, root: Path) -> dict[str, Any]:
    """serve --until-idle over the same `count` inputs, then every record it wrote counted.
    A run to the end: a window holds whichever event types the consumer reached (records
    per input differ by event type), the whole set is the sample mix."""
    from kafka import KafkaAdminClient  # noqa: PLC0415

    dep = Deployment(bootstrap, opts.partitions, opts.max_batch, root)
    try:
        dep.produce(feed.take(count))
        cmd, cwd, env = contender.commands(dep, opts.core)[0]
        done = subprocess.run([*cmd, "--until-idle"], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=600, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{contender.name} --until-idle exited {done.returncode}: "
                               f"{done.stderr[-3000:]}")
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            inputs = sum(committed_by_index(admin, dep.name, set(dep.ingress.values())).values())
        finally:
            admin.close()
        return {**count_records(dep, inputs), "produced": count}
    finally:
        dep.drop()


def count_records(dep: Deployment, inputs: int) -> dict[str, Any]:
    """Every record on the deployment's topics but ingress, read_committed, per family."""
    from kafka import KafkaConsumer, TopicPartition  # noqa: PLC0415

    from broker.backends.kafka.io import header  # noqa: PLC0415

    ingress = set(dep.ingress.values()) | {dep.out, dep.fan}
    c = KafkaConsumer(bootstrap_servers=dep.bootstrap, isolation_level="read_committed",
                      enable_auto_commit=False, max_partition_fetch_bytes=8 * 1024 * 1024)
    counts = dict.fromkeys(FAMILIES, 0)
    seqs: dict[int, tuple[int, int]] = {}
    declared: int | None = None
    try:
        tps = [TopicPartition(t, p) for t in dep.topics() if t not in ingress
               for p in sorted(c.partitions_for_topic(t) or ())]
        ends = c.end_offsets(tps)
        todo = [tp for tp in tps if ends[tp] > 0]
        c.assign(todo)
        c.seek_to_beginning(*todo)
        deadline = time.monotonic() + 120
        pending = set(todo)
        while pending:
            for tp, records in c.poll(timeout_ms=500, max_records=50_000).items():
                family = family_of(tp.topic, dep.prefix)
                for r in records:
                    if r.offset >= ends[tp]:
                        continue
                    counts[family] += 1
                    if family == "audit":
                        # a records.audit_batch record says how many entries it holds
                        n = header(r, "count")
                        if n is not None:
                            declared = (declared or 0) + int(n)
                        seq = header(r, "seq")
                        if seq is not None and seq.isdigit():
                            low, high = seqs.get(tp.partition, (int(seq), int(seq)))
                            seqs[tp.partition] = (min(low, int(seq)), max(high, int(seq)))
            done = {tp for tp in pending if c.position(tp) >= ends[tp]}
            if done:
                c.pause(*done)
                pending -= done
            if time.monotonic() > deadline:
                raise RuntimeError(f"counting records: {len(pending)} partitions unread")
    finally:
        c.close()
    entries = audit_entries(seqs, declared)
    return {"inputs": inputs, "records": counts, "per_input": per_input(counts, inputs),
            "audit_entries": entries, "audit_entries_per_input": round(entries / inputs, 3)}


# -- latency at a fixed rate -----------------------------------------------------------------

class Reader(threading.Thread):
    """Reads the contender's output read_committed and times each input's first output."""

    def __init__(self, dep: Deployment, serve: bool) -> None:
        super().__init__(daemon=True)
        from kafka import KafkaConsumer, TopicPartition  # noqa: PLC0415

        self.link, self.serve = dep.link, serve
        self.store, self.partitions = dep.layout.names.store, dep.partitions
        # fetch.max.wait bounds how late a read_committed fetch can see a commit; the
        # default (500 ms) would be part of what is measured if the broker held a fetch.
        self.consumer = KafkaConsumer(bootstrap_servers=dep.bootstrap,
                                      isolation_level="read_committed",
                                      auto_offset_reset="earliest", fetch_max_wait_ms=100)
        if serve:
            egress = [t for t in dep.layout.all_topics() if t.startswith(f"{dep.prefix}egress.")]
            tps = [TopicPartition(self.store, p) for p in range(dep.partitions)] + \
                [TopicPartition(t, 0) for t in egress]
        else:
            tps = [TopicPartition(dep.out, p) for p in range(dep.partitions)]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)
        self.arrived: dict[str, float] = {}  # ingress "topic:partition:offset" -> time
        self.by_position: dict[int, str] = {}
        self.pending: dict[int, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        from broker.backends.kafka.egress import record_link  # noqa: PLC0415
        from broker.backends.kafka.io import header  # noqa: PLC0415
        from broker.config.kafka import store_position  # noqa: PLC0415

        while not self.stop.is_set():
            polled = self.consumer.poll(timeout_ms=50)
            now = time.time()
            for tp, records in polled.items():
                for r in records:
                    if not self.serve:  # passthrough: the copy names its input
                        self.arrived.setdefault(header(r, "ingress") or "", now)
                    elif tp.topic == self.store:
                        position = store_position(r.offset, tp.partition, self.partitions)
                        self.by_position[position] = header(r, "ingress") or ""
                    else:
                        position = record_link(r, self.link).event_offset
                        self.pending.setdefault(position, now)
            for position in [p for p in self.pending if p in self.by_position]:
                self.arrived.setdefault(self.by_position[position], self.pending.pop(position))
        self.consumer.close()


def latency_run(contender: Contender, bootstrap: str, feed: Feed, opts: argparse.Namespace,
                root: Path) -> dict[str, Any]:
    from kafka import KafkaAdminClient  # noqa: PLC0415

    dep = Deployment(bootstrap, opts.partitions, opts.max_batch, root)
    seconds = opts.latency_warmup + opts.latency_window
    items = feed.take(50 + int(opts.rate * seconds) + 1)
    warm, paced = items[:50], items[50:]
    feed_file, times_file = dep.root / "paced.json", dep.root / "times.json"
    feed_file.write_text(json.dumps([(s, t, e, d.hex()) for s, t, e, d in paced]))
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    reader = Reader(dep, contender.kind == "serve")
    topics = set(dep.ingress.values())
    group = contender.group(dep)
    load_before = load()
    try:
        with running(contender, dep, opts.core) as procs:
            dep.produce(warm)
            deadline = time.monotonic() + 180
            while sum(committed_by_index(admin, group, topics).values()) < len(warm):
                _check_alive(procs, contender.name)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{contender.name} did not start")
                time.sleep(0.1)
            reader.start()
            pace = subprocess.run(
                ["taskset", "-c", "0", sys.executable, str(Path(__file__).resolve()), "pace",
                 "--bootstrap", bootstrap, "--feed", str(feed_file), "--rate", str(opts.rate),
                 "--topics", json.dumps(dep.ingress), "--partitions", str(dep.partitions),
                 "--out", str(times_file)], cwd=REPO, capture_output=True, text=True,
                check=False)
            if pace.returncode != 0:
                raise RuntimeError(f"paced producer failed: {pace.stderr[-3000:]}")
            paced_end = time.monotonic()
            deadline = paced_end + 30
            while sum(committed_by_index(admin, group, topics).values()) < len(items) and \
                    time.monotonic() < deadline:
                time.sleep(0.1)
            # how long the contender took to commit the rest once the pacer stopped: well
            # over a batch means it did not keep up with the rate (a queue, not a latency)
            drain_s = round(time.monotonic() - paced_end, 2)
            time.sleep(1.0)  # the last transaction's records become readable
    finally:
        reader.stop.set()
        admin.close()
        reader.join(timeout=10)
        dep.drop()
    paced_out = json.loads(times_file.read_text())
    begin = paced_out["start"] + opts.latency_warmup
    sent = {k: v for k, v in paced_out["times"].items() if v[0] >= begin}
    from_send = [(reader.arrived[k] - v[0]) * 1000 for k, v in sent.items()
                 if k in reader.arrived]
    from_ack = [(reader.arrived[k] - v[1]) * 1000 for k, v in sent.items()
                if k in reader.arrived]
    out: dict[str, Any] = {"offered_per_s": round(paced_out["offered_per_s"]),
                           "in_window": len(sent), "with_output": len(from_send),
                           "drain_s": drain_s,
                           "load_avg": [load_before, load()]}
    if from_send:
        out.update({"p50_ms": round(percentile(from_send, 0.50), 1),
                    "p99_ms": round(percentile(from_send, 0.99), 1),
                    "max_ms": round(max(from_send), 1),
                    "p50_from_ack_ms": round(percentile(from_ack, 0.50), 1),
                    "p99_from_ack_ms": round(percentile(from_ack, 0.99), 1)})
    return out


# -- the run -------------------------------------------------------------------------------

@contextlib.contextmanager
def kafka(bootstrap: str | None) -> Iterator[str]:
    if bootstrap:
        yield bootstrap
        return
    spec = importlib.util.spec_from_file_location("kafka_launcher",
                                                  REPO / "deploy" / "kafka" / "launcher.py")
    assert spec is not None
    assert spec.loader is not None
    launcher = importlib.util.module_from_spec(spec)
    sys.modules["kafka_launcher"] = launcher
    spec.loader.exec_module(launcher)
    with launcher.KafkaNode(heap="768m") as node:
        yield node.bootstrap_servers


@dataclass
class Estimates:
    """Last measured rate per contender: how much input its next run needs."""
    rates: dict[str, float] = field(default_factory=lambda: {})

    def get(self, c: Contender) -> float:
        default = 20_000.0 if c.kind == "passthrough" else 3_000.0 * c.processes
        return self.rates.get(c.name, default)


def contenders(opts: argparse.Namespace, fanout: int) -> list[Contender]:
    serves = [Contender("serve", "serve")]
    if opts.tree is not None:
        serves.insert(0, Contender("serve_before", "serve", tree=opts.tree))
    out = list(serves)
    out.append(Contender("passthrough", "passthrough"))
    if opts.fanout:
        out.append(Contender("passthrough_fanout", "passthrough", fanout=fanout))
    if not opts.no_scaling:
        out.extend(Contender(f"{s.name}_x2", "serve", tree=s.tree, processes=2)
                   for s in serves)
    return out


def one_pass(bootstrap: str, opts: argparse.Namespace, feed: Feed,
             root: Path) -> dict[str, Any]:
    est = Estimates()
    rounds: list[dict[str, Any]] = []
    seconds = opts.warmup + opts.window + TAIL_S + 1.0
    records: dict[str, Any] = {}
    for c in contenders(opts, 1):
        if c.kind == "serve" and c.processes == 1 and opts.rounds > 0:
            records[c.name] = records_run(c, bootstrap, feed, opts.count_inputs, opts, root)
            print(f"records {c.name:20} {records[c.name]['per_input']}", flush=True)
    fanout = max(1, round(records["serve"]["per_input"]["total"])) if records else 1
    for n in range(opts.rounds):
        got: dict[str, Any] = {}
        for listed in contenders(opts, fanout):
            c = Contender(listed.name, listed.kind, fanout=fanout) \
                if listed.name == "passthrough_fanout" else listed
            run = throughput_run(c, bootstrap, feed, inputs_needed(est.get(c), seconds),
                                 opts, root)
            if run["dry"]:  # caught up inside its window: again, with input for its rate
                rate = run["inputs_per_s"] or est.get(c) * 3
                est.rates[c.name] = max(rate, est.get(c)) * 2.5
                run = throughput_run(c, bootstrap, feed,
                                     inputs_needed(est.rates[c.name], seconds), opts, root)
            if run["inputs_per_s"]:
                est.rates[c.name] = run["inputs_per_s"]
            got[c.name] = run
            print(f"round {n + 1} {c.name:20} {run['inputs_per_s']} inputs/s"
                  f"{' DRY' if run['dry'] else ''}  load {run['load_avg']}", flush=True)
        rounds.append(got)
    result: dict[str, Any] = {"records": records, "rounds": rounds,
                              "summary": summarise(rounds, records)}
    if opts.rate > 0:
        lat: dict[str, Any] = {}
        names = ["serve", "passthrough"] if opts.tree is None else \
            ["serve_before", "serve", "passthrough"]
        for c in contenders(opts, 1):
            if c.name in names:
                lat[c.name] = latency_run(c, bootstrap, feed, opts, root)
                print(f"latency {c.name:20} {lat[c.name]}", flush=True)
        result["latency"] = {"rate_per_s": opts.rate, "warmup_s": opts.latency_warmup,
                             "window_s": opts.latency_window, **lat}
    return result


def summarise(rounds: list[dict[str, Any]], records: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def ratios(num: str, den: str) -> list[float]:
        return [r[num]["inputs_per_s"] / r[den]["inputs_per_s"] for r in rounds
                if r.get(num, {}).get("inputs_per_s") and r.get(den, {}).get("inputs_per_s")]

    for serve in ("serve_before", "serve"):
        if not rounds or serve not in rounds[0]:
            continue
        pairs = {f"{serve}/passthrough": ratios(serve, "passthrough"),
                 f"{serve}/passthrough_fanout": ratios(serve, "passthrough_fanout"),
                 f"{serve}_x2/{serve}": ratios(f"{serve}_x2", serve)}
        for name, values in pairs.items():
            if values:
                spread = ratio_spread(values)
                out[name] = {"per_round": [round(v, 3) for v in values],
                             "median": round(statistics.median(values), 3),
                             "spread_max_over_min": round(spread, 3) if spread else None}
        if serve in records:
            out[f"{serve} records per input"] = records[serve]["per_input"]
            out[f"{serve} audit entries per input"] = records[serve]["audit_entries_per_input"]
    return out


def print_table(result: dict[str, Any]) -> None:
    rounds = result["rounds"]
    names = list(rounds[0]) if rounds else []
    print(f"\n{'round':6}" + "".join(f"{n:>20}" for n in names) + f"{'load avg':>14}")
    for i, r in enumerate(rounds):
        loads = [x for n in names for x in r[n]["load_avg"]]
        print(f"{i + 1:<6}" + "".join(f"{r[n]['inputs_per_s']!s:>20}" for n in names)
              + f"{min(loads):>7}-{max(loads)}")
    print()
    for name, s in result["summary"].items():
        print(f"{name:34} {json.dumps(s)}")
    lat = result.get("latency")
    if lat:
        print(f"\nlatency @ {lat['rate_per_s']}/s, {lat['window_s']} s window "
              f"{'':4} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'drain s':>8} {'load avg':>14}")
        for name in ("serve_before", "serve", "passthrough"):
            if name in lat:
                g = lat[name]
                print(f"{name:34} {g.get('p50_ms', '-'):>8} {g.get('p99_ms', '-'):>8} "
                      f"{g.get('max_ms', '-'):>8} {g.get('drain_s', '-'):>8} "
                      f"{g['load_avg']!s:>14}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="role")
    pt = sub.add_parser("passthrough")
    for name in ("--config", "--group", "--topics", "--out", "--fan-topic"):
        pt.add_argument(name, required=True)
    pt.add_argument("--fanout", type=int, default=1)
    pt.add_argument("--filler-bytes", type=int, default=700)
    pace = sub.add_parser("pace")
    for name in ("--bootstrap", "--feed", "--topics", "--out"):
        pace.add_argument(name, required=True)
    pace.add_argument("--rate", type=float, required=True)
    pace.add_argument("--partitions", type=int, required=True)
    parser.add_argument("--rounds", type=int, default=3, help="0 = latency only")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds discarded")
    parser.add_argument("--window", type=float, default=15.0, help="seconds measured")
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--max-batch", type=int, default=500)
    parser.add_argument("--rate", type=int, default=300, help="latency rate; 0 = skip")
    parser.add_argument("--latency-warmup", type=float, default=3.0)
    parser.add_argument("--latency-window", type=float, default=10.0)
    parser.add_argument("--count-inputs", type=int, default=4000,
                        help="inputs of the records-per-input run (serve --until-idle)")
    parser.add_argument("--core", type=int, default=1, help="core for one contender process")
    parser.add_argument("--tree", type=Path, help="serve_before from this checkout")
    parser.add_argument("--fanout", action="store_true",
                        help="also a passthrough writing serve's records per input")
    parser.add_argument("--no-scaling", action="store_true", help="skip 2 serve processes")
    parser.add_argument("--runs-check", action="store_true", help="the whole run twice")
    parser.add_argument("--quick", action="store_true",
                        help="smoke check: 1 round, 2 s warm-up, 3 s windows, 5 s latency")
    parser.add_argument("--bootstrap", help="an already running Kafka (default: start one)")
    parser.add_argument("--out", type=Path, default=RESULTS / "kafka.json")
    args = parser.parse_args()
    if args.role is None and args.tree is not None:
        args.tree = args.tree.resolve()
        if not (args.tree / "broker").is_dir():
            parser.error(f"--tree {args.tree}: no broker/ package there")
    return args


def main() -> None:
    args = parse_args()
    if args.role == "passthrough":
        run_passthrough(args)
        return
    if args.role == "pace":
        run_pace(args)
        return
    if args.quick:
        args.rounds, args.warmup, args.window = min(args.rounds, 1), 2.0, 3.0
        args.latency_warmup, args.latency_window = 2.0, 5.0
        args.count_inputs = min(args.count_inputs, 2000)
    from broker.logs import configure  # noqa: PLC0415

    configure("warning")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # the bench's own clients' chatter
    with contextlib.suppress(OSError):  # the bench's own polling stays off the contender's core
        os.sched_setaffinity(0, {0})
    started = time.time()
    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                    "contender_core": args.core, "load_avg_at_start": load()},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                     if k not in ("role", "out")}}
    feed = Feed()
    passes = []
    with kafka(args.bootstrap) as bootstrap, \
            tempfile.TemporaryDirectory(prefix="bench-kafka-") as tmp:
        for _ in range(2 if args.runs_check else 1):
            passes.append(one_pass(bootstrap, args, feed, Path(tmp)))
            print_table(passes[-1])
    result["passes"] = passes
    if args.runs_check:
        medians = [p["summary"].get("serve/passthrough", {}).get("median") for p in passes]
        result["runs_check"] = {"serve/passthrough medians": medians}
        print(f"\nruns check: serve/passthrough medians {medians}")
    result["wall_s"] = round(time.time() - started)
    print(f"wall {result['wall_s']} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    try:
        main()
    except Exception:  # noqa: BLE001 - the bench's own failures in full (the log handler redacts)
        traceback.print_exc()
        sys.exit(2)
