"""Kafka end to end on a local single-node Kafka: `covenant-broker serve` against a raw
consume -> produce passthrough, with the same client, topics and batch settings, in one run.

Deployment: a fresh topic prefix per run, the broker's own topic layout (ingress per event
type, store, egress per recipient and purpose, audit, ...) with --partitions partitions,
the sample covenant's event mix as Avro single-object records on the ingress topics,
keyed by event_id and partitioned as `covenant-broker ingest` does.

Throughput (the same N input records for every contender; each contender in its own
process pinned to --core, read from the earliest offset with its own consumer group):
  serve              `covenant-broker serve --backend kafka` (the real CLI, --now pinned)
  passthrough        kafka-python: group consumer (read_committed, max_poll_records =
                     kafka.max_batch), per partition index one transactional producer
                     (idempotent, acks=all, linger_ms=5), one transaction per batch with the
                     consumed offsets (send_offsets_to_transaction): exactly-once, no policy
  passthrough_fanout the same, writing as many records per input as serve wrote (store,
                     egress, audit, quarantine; measured from serve's topics), to show what
                     the message count costs apart from the policy
  confluent          the passthrough with confluent-kafka (librdkafka), if it imports
Measured from outside: the group's committed ingress offsets, polled every 50 ms, from
the first commit to the last (start-up and group join are not counted).

Latency at a fixed offered rate (--rate, default 1000 events/s, for --seconds): a paced
producer in this process; a read_committed reader here too. serve: from the send of an
input record to the moment its first released record is readable on an egress topic
(mapped through the store record's `ingress` header); passthrough: to the moment its copy
is readable. p50/p99/max over the records that produced output.

    python bench/kafka_bench.py [--events 20000] [--partitions 2] [--rate 1000]
        [--seconds 10] [--bootstrap HOST:PORT]   (default: start deploy/kafka's KafkaNode)

Writes bench/results/kafka.json (gitignored). The passthrough role of this script:
    python bench/kafka_bench.py passthrough --bootstrap ... --group ... --topics a,b ...
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
DAY_NOW = "2026-05-12T18:00:00Z"  # the decision time pinned for serve (as the pipeline bench)
LINGER_MS = 5
SESSION = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


# -- the passthrough role (runs in its own process) ---------------------------------------

def run_passthrough(args: argparse.Namespace) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    topics = args.topics.split(",")
    filler = os.urandom(args.filler_bytes)
    if args.client == "confluent":
        _confluent_passthrough(args, topics, filler, stop)
        return
    from kafka import KafkaConsumer, KafkaProducer  # noqa: PLC0415 - the role's own import
    from kafka.structs import OffsetAndMetadata  # noqa: PLC0415

    consumer = KafkaConsumer(bootstrap_servers=args.bootstrap, group_id=args.group,
                             client_id=f"{args.group}-consumer", enable_auto_commit=False,
                             auto_offset_reset="earliest", isolation_level="read_committed",
                             max_poll_records=args.max_batch, **SESSION)
    consumer.subscribe(topics)
    producers: dict[int, Any] = {}

    def producer(index: int) -> Any:
        if index not in producers:
            p = KafkaProducer(bootstrap_servers=args.bootstrap,
                              client_id=f"{args.group}-{index}",
                              transactional_id=f"{args.group}-{index}", enable_idempotence=True,
                              acks="all", linger_ms=LINGER_MS)
            p.init_transactions()
            producers[index] = p
        return producers[index]

    while not stop.is_set():
        batch = consumer.poll(timeout_ms=200)
        by_index: dict[int, dict[Any, list[Any]]] = {}
        for tp, records in batch.items():
            by_index.setdefault(tp.partition, {})[tp] = records
        for index, part in by_index.items():
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


def _confluent_passthrough(args: argparse.Namespace, topics: list[str], filler: bytes,
                           stop: threading.Event) -> None:
    from confluent_kafka import Consumer, Producer  # noqa: PLC0415 - optional, bench only

    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": args.group,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "isolation.level": "read_committed", "session.timeout.ms": 6000,
                         "heartbeat.interval.ms": 1000})
    consumer.subscribe(topics)
    producers: dict[int, Any] = {}

    def producer(index: int) -> Any:
        if index not in producers:
            p = Producer({"bootstrap.servers": args.bootstrap,
                          "transactional.id": f"{args.group}-{index}",
                          "enable.idempotence": True, "acks": "all",
                          "linger.ms": LINGER_MS})
            p.init_transactions()
            producers[index] = p
        return producers[index]

    from confluent_kafka import TopicPartition  # noqa: PLC0415

    while not stop.is_set():
        messages = consumer.consume(num_messages=args.max_batch, timeout=0.2)
        by_index: dict[int, list[Any]] = {}
        for m in messages:
            if m.error() is None:
                by_index.setdefault(m.partition(), []).append(m)
        for index, part in by_index.items():
            p = producer(index)
            p.begin_transaction()
            last: dict[tuple[str, int], int] = {}
            for m in part:
                origin = f"{m.topic()}:{m.partition()}:{m.offset()}".encode()
                p.produce(args.out, m.value(), key=m.key(), partition=index,
                          headers=[("ingress", origin)])
                for _ in range(args.fanout - 1):
                    p.produce(args.fan_topic, filler, key=m.key(), partition=index)
                last[(m.topic(), m.partition())] = m.offset()
                p.poll(0)
            offsets = [TopicPartition(t, q, o + 1) for (t, q), o in last.items()]
            p.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata())
            p.commit_transaction()
    for p in producers.values():
        p.flush()
    consumer.close()


# -- deployments ---------------------------------------------------------------------------

class Deployment:
    """A topic prefix, group and data directory of its own; the broker's topic layout."""

    def __init__(self, bootstrap: str, partitions: int, max_batch: int, root: Path) -> None:
        self.bootstrap = bootstrap
        self.partitions = partitions
        self.name = f"bench{uuid.uuid4().hex[:8]}"
        self.root = root / self.name
        self.root.mkdir(parents=True)
        self.config = self.root / "config.yaml"
        self.kafka = {"bootstrap_servers": bootstrap, "topic_prefix": f"{self.name}.",
                      "group_id": self.name, "partitions": partitions,
                      "max_batch": max_batch, "poll_timeout_ms": 200, **SESSION}
        self.config.write_text(json.dumps({"kafka": self.kafka, "log_level": "warning"}))
        from broker.app.service import Broker  # noqa: PLC0415
        from broker.config import load_settings  # noqa: PLC0415

        self.settings = load_settings(self.config, {"backend": "kafka",
                                                    "data_dir": self.root / "data"},
                                      environ={})
        broker = Broker(self.settings)  # creates the topics
        try:
            self.layout = broker.log.layout  # type: ignore[attr-defined]
            self.link = broker.log.link  # type: ignore[attr-defined]  # opens broker_link
            self.registry = broker.registry
            self.ingress = {t: self.layout.names.ingress(t) for t in broker.registry.event_types()}
        finally:
            broker.close()
        self.out = f"{self.name}.passthrough"
        self.fan = f"{self.name}.passthrough-fanout"
        self._create([self.out, self.fan])

    def _create(self, topics: list[str]) -> None:
        from kafka import KafkaAdminClient  # noqa: PLC0415
        from kafka.admin import NewTopic  # noqa: PLC0415

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            admin.create_topics([NewTopic(t, self.partitions, 1) for t in topics])
        finally:
            admin.close()

    def serve_cmd(self, core: int) -> list[str]:
        return ["taskset", "-c", str(core), sys.executable, "-m", "broker.cli", "--backend",
                "kafka", "--config", str(self.config), "--data-dir", str(self.root / "data"),
                "--now", DAY_NOW, "serve"]

    def passthrough_cmd(self, core: int, group: str, client: str, fanout: int = 1,
                        max_batch: int = 500) -> list[str]:
        return ["taskset", "-c", str(core), sys.executable, str(Path(__file__).resolve()),
                "passthrough", "--bootstrap", self.bootstrap, "--group", group,
                "--topics", ",".join(sorted(self.ingress.values())), "--out", self.out,
                "--fan-topic", self.fan, "--fanout", str(fanout), "--client", client,
                "--max-batch", str(max_batch)]


def inputs(count: int) -> list[tuple[str, str, str, bytes]]:
    """(source, event type, event_id, Avro single-object bytes) of the pipeline bench mix."""
    from broker.app.service import Broker  # noqa: PLC0415
    from broker.config import load_settings  # noqa: PLC0415

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from pipeline_bench import make_inputs  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="bench-kafka-inputs-") as tmp:
        broker = Broker(load_settings(overrides={"data_dir": tmp}, environ={}))
        try:
            out = []
            for source, event_type, data in make_inputs(broker, count, seed=7):
                _, record = broker.registry.decode_single_object(data)
                out.append((source, event_type, str(record["event_id"]).lower(), data))
        finally:
            broker.close()
    return out


def producer(bootstrap: str) -> Any:
    from kafka import KafkaProducer  # noqa: PLC0415

    return KafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all",
                         linger_ms=LINGER_MS)


def send(p: Any, dep: Deployment, item: tuple[str, str, str, bytes]) -> Any:
    from broker.backends.kafka.pipeline import home_partition  # noqa: PLC0415

    source, event_type, event_id, data = item
    return p.send(dep.ingress[event_type], data, key=event_id.encode(),
                  partition=home_partition(event_id, dep.partitions),
                  headers=[("source", source.encode())])


def committed(admin: Any, group: str, topics: set[str]) -> int:
    """Inputs the group has committed (0 while the group does not exist yet)."""
    from kafka.errors import KafkaError  # noqa: PLC0415

    try:
        offsets = admin.list_group_offsets(group).get(group) or {}
    except KafkaError:
        return 0
    return sum(o.offset for tp, o in offsets.items() if tp.topic in topics and o.offset > 0)


def throughput(dep: Deployment, cmd: list[str], group: str, total: int,
               timeout_s: float = 600) -> dict[str, Any]:
    """Run a contender until its group has committed every input; time first to last."""
    from kafka import KafkaAdminClient  # noqa: PLC0415

    admin = KafkaAdminClient(bootstrap_servers=dep.bootstrap)
    topics = set(dep.ingress.values())
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    first: tuple[float, int] | None = None
    started = time.perf_counter()
    try:
        while True:
            done = committed(admin, group, topics)
            now = time.perf_counter()
            if done and first is None:
                first = (now, done)
            if done >= total:
                break
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[3:6]} exited {proc.returncode}: "
                                   f"{proc.stderr.read()[-3000:] if proc.stderr else ''}")
            if now - started > timeout_s:
                raise RuntimeError(f"{group}: {done}/{total} after {timeout_s}s")
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        admin.close()
    assert first is not None
    seconds = now - first[0]
    counted = total - first[1]
    return {"events": total, "first_commit_events": first[1], "seconds": round(seconds, 3),
            "events_per_s": round(counted / seconds) if seconds > 0 else None,
            "wall_with_startup_s": round(now - started, 2)}


def written_per_event(dep: Deployment, total: int) -> float:
    """Records serve wrote per input (store, egress, audit, quarantine), from end offsets
    read_committed, less one transaction marker per partition and batch (approximate)."""
    from kafka import KafkaConsumer, TopicPartition  # noqa: PLC0415

    c = KafkaConsumer(bootstrap_servers=dep.bootstrap, isolation_level="read_committed")
    try:
        topics = [t for t in c.topics() if t.startswith(f"{dep.name}.") and t not in
                  set(dep.ingress.values()) | {dep.out, dep.fan}]
        tps = [TopicPartition(t, p) for t in topics for p in c.partitions_for_topic(t) or ()]
        count = 0
        for tp in tps:  # records, not offsets: offsets also count the transaction markers
            c.assign([tp])
            c.seek_to_beginning(tp)
            end = c.end_offsets([tp])[tp]
            while c.position(tp) < end:
                for records in c.poll(timeout_ms=500).values():
                    count += len(records)
        return count / total
    finally:
        c.close()


# -- latency at a fixed rate -----------------------------------------------------------------

class Reader(threading.Thread):
    """Reads the contender's output read_committed and times each input's first output."""

    def __init__(self, bootstrap: str, topics: list[str], store: str | None,
                 partitions: int, link: Any = None) -> None:
        super().__init__(daemon=True)
        self.link = link  # the egress records' sealed broker_link names their store position
        from kafka import KafkaConsumer, TopicPartition  # noqa: PLC0415

        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap,
                                      isolation_level="read_committed",
                                      auto_offset_reset="earliest")
        tps = [TopicPartition(t, p) for t in topics
               for p in range(partitions if t == store or store is None else 1)]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)
        self.store, self.partitions = store, partitions
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
                    if self.store is None:  # passthrough: the copy names its input
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


def latency(dep: Deployment, cmd: list[str], group: str, feed: list[tuple[str, str, str, bytes]],
            rate: int, seconds: float, store: bool) -> dict[str, Any]:
    from kafka import KafkaAdminClient  # noqa: PLC0415

    admin = KafkaAdminClient(bootstrap_servers=dep.bootstrap)
    topics = set(dep.ingress.values())
    if store:
        outputs = [t for t in dep.layout.all_topics() if t.startswith(f"{dep.name}.egress.")]
        reader = Reader(dep.bootstrap, [dep.layout.names.store, *outputs],
                        dep.layout.names.store, dep.partitions, dep.link)
    else:
        reader = Reader(dep.bootstrap, [dep.out], None, dep.partitions)
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    p = producer(dep.bootstrap)
    sent: dict[str, float] = {}
    try:
        warm = feed[:50]  # the contender is live once these are committed
        for item in warm:
            send(p, dep, item)
        p.flush()
        deadline = time.monotonic() + 120
        while committed(admin, group, topics) < len(warm):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{group} did not start: "
                                   f"{proc.stderr.read()[-3000:] if proc.stderr else ''}")
            time.sleep(0.1)
        reader.start()
        paced = feed[len(warm):len(warm) + int(rate * seconds)]
        start = time.perf_counter()
        for i, item in enumerate(paced):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            at = time.time()
            future = send(p, dep, item)
            future.add_callback(lambda md, at=at: sent.__setitem__(
                f"{md.topic}:{md.partition}:{md.offset}", at))
        p.flush()
        offered = len(paced) / (time.perf_counter() - start)
        deadline = time.monotonic() + 60
        while committed(admin, group, topics) < len(warm) + len(paced) and \
                time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # the last transaction's records become readable
    finally:
        reader.stop.set()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        p.close()
        admin.close()
    reader.join(timeout=10)
    samples = sorted((reader.arrived[k] - t) * 1000 for k, t in sent.items()
                     if k in reader.arrived)

    def pct(q: float) -> float:
        return round(samples[min(len(samples) - 1, int(q * len(samples)))], 1)

    return {"offered_per_s": round(offered), "sent": len(sent), "with_output": len(samples),
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": round(samples[-1], 1),
            "mean_ms": round(statistics.fmean(samples), 1)} if samples else \
        {"offered_per_s": round(offered), "sent": len(sent), "with_output": 0}


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


def main() -> None:  # noqa: PLR0915 - one run, phase after phase, reads best in one place
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="role")
    pt = sub.add_parser("passthrough")
    for name in ("--bootstrap", "--group", "--topics", "--out", "--fan-topic"):
        pt.add_argument(name, required=True)
    pt.add_argument("--fanout", type=int, default=1)
    pt.add_argument("--filler-bytes", type=int, default=700)
    pt.add_argument("--max-batch", type=int, default=500)
    pt.add_argument("--client", choices=("kafka-python", "confluent"), default="kafka-python")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--max-batch", type=int, default=500)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--core", type=int, default=1, help="core for serve / passthrough")
    parser.add_argument("--bootstrap", help="an already running Kafka (default: start one)")
    parser.add_argument("--out", type=Path, default=RESULTS / "kafka.json")
    args = parser.parse_args()
    if args.role == "passthrough":
        run_passthrough(args)
        return
    from broker.logs import configure  # noqa: PLC0415

    configure("warning")
    confluent = importlib.util.find_spec("confluent_kafka") is not None
    feed = inputs(args.events + 50 + int(args.rate * args.seconds))
    result: dict[str, Any] = {"machine": {"cpus": os.cpu_count(),
                                          "python": sys.version.split()[0],
                                          "contender_core": args.core},
                              "events": args.events, "partitions": args.partitions,
                              "max_batch": args.max_batch, "linger_ms": LINGER_MS}
    with kafka(args.bootstrap) as bootstrap, \
            tempfile.TemporaryDirectory(prefix="bench-kafka-") as tmp:
        dep = Deployment(bootstrap, args.partitions, args.max_batch, Path(tmp))
        p = producer(bootstrap)
        for item in feed[:args.events]:
            send(p, dep, item)
        p.flush()
        p.close()
        print(f"{args.events} inputs on {dep.name}'s ingress topics", flush=True)
        runs: dict[str, Any] = {}
        runs["serve"] = throughput(dep, dep.serve_cmd(args.core), dep.name, args.events)
        print("serve", runs["serve"], flush=True)
        fanout = written_per_event(dep, args.events)
        result["serve_records_written_per_event"] = round(fanout, 2)
        contenders = [("passthrough", "kafka-python", 1),
                      ("passthrough_fanout", "kafka-python", max(1, round(fanout)))]
        if confluent:
            contenders.append(("confluent", "confluent", 1))
        for name, client, k in contenders:
            group = f"{dep.name}-{name}"
            runs[name] = throughput(dep, dep.passthrough_cmd(args.core, group, client, k,
                                                             args.max_batch),
                                    group, args.events)
            runs[name]["records_per_input"] = k
            print(name, runs[name], flush=True)
        base = runs["passthrough"]["events_per_s"]
        for run in runs.values():
            run["ratio_to_passthrough"] = round(run["events_per_s"] / base, 3)
        result["throughput"] = runs
        lat: dict[str, Any] = {}
        paced = feed[args.events:]
        live = Deployment(bootstrap, args.partitions, args.max_batch, Path(tmp))
        lat["serve"] = latency(live, live.serve_cmd(args.core), live.name, paced, args.rate,
                               args.seconds, store=True)
        print("serve latency", lat["serve"], flush=True)
        live = Deployment(bootstrap, args.partitions, args.max_batch, Path(tmp))
        group = f"{live.name}-passthrough"
        lat["passthrough"] = latency(live, live.passthrough_cmd(args.core, group,
                                                                "kafka-python"),
                                     group, paced, args.rate, args.seconds, store=False)
        print("passthrough latency", lat["passthrough"], flush=True)
        if confluent:
            live = Deployment(bootstrap, args.partitions, args.max_batch, Path(tmp))
            group = f"{live.name}-confluent"
            lat["confluent"] = latency(live, live.passthrough_cmd(args.core, group,
                                                                  "confluent"),
                                       group, paced, args.rate, args.seconds, store=False)
            print("confluent latency", lat["confluent"], flush=True)
        result["latency_at_fixed_rate"] = {"rate_per_s": args.rate, "seconds": args.seconds,
                                           **lat}
    print(f"\n{'contender':20} {'events/s':>10} {'ratio':>7}")
    for name, run in result["throughput"].items():
        print(f"{name:20} {run['events_per_s']:>10} {run['ratio_to_passthrough']:>7}")
    print(f"\n{'latency @ ' + str(args.rate) + '/s':20} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'max ms':>8}")
    for name, got in lat.items():
        print(f"{name:20} {got.get('p50_ms', '-'):>8} {got.get('p99_ms', '-'):>8} "
              f"{got.get('max_ms', '-'):>8}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
