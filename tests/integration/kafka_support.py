"""Helpers for the Kafka integration tests: an isolated deployment per test, the CLI in and
out of process, and an exactly-once checker that reads every topic read_committed."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from broker.app.service import Broker
from broker.backends.kafka.audit_batch import read_partition
from broker.backends.kafka.egress import tombstone_for
from broker.backends.kafka.event_log import KafkaEventLog
from broker.backends.kafka.io import Clients, end_offsets, header, read_all
from broker.cli import main
from broker.clock import parse_instant
from broker.config import load_settings
from broker.errors import StorageError
from broker.pipeline.port import StoredEvent

REPO = Path(__file__).resolve().parents[2]


@dataclass
class KafkaEnv:
    """One isolated deployment: its own topic prefix, group, transactional ids, data dir."""

    bootstrap: str
    root: Path
    partitions: int = 2
    max_batch: int = 500
    instance_id: str | None = None
    name: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}")

    def __post_init__(self) -> None:
        self.data_dir = self.root / "data"
        self.config = self.root / "config.yaml"
        kafka: dict[str, Any] = {"bootstrap_servers": self.bootstrap,
                                 "topic_prefix": f"{self.name}.", "group_id": self.name,
                                 "partitions": self.partitions, "max_batch": self.max_batch,
                                 "poll_timeout_ms": 200, "session_timeout_ms": 6000,
                                 "heartbeat_interval_ms": 1000}
        if self.instance_id:
            kafka["instance_id"] = self.instance_id
        self.root.mkdir(parents=True, exist_ok=True)
        self.config.write_text(yaml.safe_dump({"kafka": kafka, "log_level": "info",
                                               "log_format": "console"}))

    def args(self) -> list[str]:
        return ["--backend", "kafka", "--config", str(self.config), "--data-dir",
                str(self.data_dir)]

    def settings(self) -> Any:
        return load_settings(self.config, {"backend": "kafka", "data_dir": self.data_dir},
                             environ={})

    def broker(self) -> Broker:
        return Broker(self.settings())

    def cleanup(self) -> None:
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            topics = [t for t in admin.list_topics() if t.startswith(f"{self.name}.")]
            if topics:
                admin.delete_topics(topics, raise_errors=False)
        finally:
            admin.close()


def run_cli(argv: list[str]) -> tuple[int, str]:
    """The CLI in this process; (exit code, standard output)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


def serve_process(env: KafkaEnv, now: str, *, until_idle: bool = False,
                  instance_id: str | None = None) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "broker.cli", *env.args(), "--now", now, "serve"]
    if until_idle:
        argv.append("--until-idle")
    if instance_id:
        argv += ["--instance-id", instance_id]
    return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


# -- reading everything back --------------------------------------------------------------

@dataclass
class Snapshot:
    egress: dict[tuple[str, str], list[Any]]  # (recipient, purpose) -> records
    audit: dict[int, list[dict[str, Any]]]  # audit partition -> decoded entries
    chains: dict[int, Any]  # audit partition -> ChainReport
    quarantine: int
    aborted: int  # store, egress and audit records of aborted transactions (read_uncommitted)
    unreadable: list[int]  # store offsets whose sealed event does not open
    # (recipient, purpose, tombstone offset) -> the offset of the record it ends, from the
    # tombstone's sealed broker_link header
    tombstone_for: dict[tuple[str, str, int], int] = field(default_factory=dict)

    def entries(self, name: str) -> list[dict[str, Any]]:
        return [e for entries in self.audit.values() for e in entries if e["name"] == name]


def abort_open_transactions(env: KafkaEnv) -> None:
    """End what a killed writer left open, as the member that takes over its partition does.

    A `serve` killed inside a transaction leaves it open until the transaction timeout or
    until the next holder of its transactional id initialises; until then every
    read_committed reader stops at that transaction's first record on each partition it
    wrote (the last stable offset), and records committed there after it are hidden.
    """
    broker = env.broker()
    try:
        assert isinstance(broker.log, KafkaEventLog)
        cfg = broker.log.cfg
        clients = Clients(cfg)
        for txn_id in [cfg.partition_txn_id(p) for p in range(cfg.partitions)] + [
                cfg.commands_txn_id]:
            producer = clients.transactional_producer(txn_id)
            try:
                producer.init_transactions()  # fences the old holder, aborts its transaction
            finally:
                producer.close(timeout=5)
    finally:
        broker.close()


def _wait_stable(reader: KafkaConsumer, everything: KafkaConsumer,
                 tps: list[TopicPartition], timeout_s: float = 5) -> None:
    """Wait until no transaction is open on `tps` (last stable offset = high watermark).

    A snapshot taken past an open transaction would count a committed audit entry on one
    partition but miss the egress record of the same transaction on another, hidden behind
    someone else's open transaction there.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        stable, high = end_offsets(reader, tps), end_offsets(everything, tps)
        open_ = sorted(f"{tp.topic}[{tp.partition}]" for tp in tps if stable[tp] < high[tp])
        if not open_:
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"a transaction stays open on {open_} (a killed writer's?): call "
                "abort_open_transactions(env) before taking the snapshot")
        time.sleep(0.1)


def snapshot(env: KafkaEnv) -> Snapshot:
    broker = env.broker()
    try:
        log = broker.log
        assert isinstance(log, KafkaEventLog)
        layout, schema = log.layout, log.audit_schema
        reader = Clients(log.cfg).reader("test")
        everything = KafkaConsumer(bootstrap_servers=env.bootstrap, group_id=None,
                                   enable_auto_commit=False, auto_offset_reset="earliest",
                                   isolation_level="read_uncommitted")
        egress_tps = {TopicPartition(layout.names.egress(r, p), 0): (r, p)
                      for r, p in layout.streams}
        audit_tps = [TopicPartition(layout.names.audit, p)
                     for p in range(log.cfg.audit_partitions)]
        store_tps = [TopicPartition(layout.names.store, p) for p in range(log.cfg.partitions)]
        written = [*store_tps, *egress_tps, *audit_tps]
        try:
            _wait_stable(reader, everything, written)
            egress = {egress_tps[tp]: records for tp, records in
                      read_all(reader, egress_tps).items()}
            targets = {(r, p, record.offset): target for (r, p), records in egress.items()
                       for record in records
                       if (target := tombstone_for(record, log.link)) is not None}
            raw = read_all(reader, audit_tps)
            read = {tp.partition: read_partition(schema, records)
                    for tp, records in raw.items()}
            audit = {p: [schema.decode(data) for data in entries.data]
                     for p, entries in read.items()}
            chains = {p: entries.report for p, entries in read.items()}
            stored = read_all(reader, store_tps)
            unreadable = [r.offset for records in stored.values() for r in records
                          if not _opens(broker, r)]
            committed = sum(len(r) for r in read_all(reader, written).values())
            total = sum(len(r) for r in read_all(everything, written).values())
        finally:
            reader.close()
            everything.close()
        return Snapshot(egress, audit, chains, log.quarantine_count(), total - committed,
                        unreadable, targets)
    finally:
        broker.close()


def _opens(broker: Broker, record: Any) -> bool:
    event = StoredEvent(record.offset, header(record, "event_type") or "", "",
                        record.key.decode(), bytes(record.value), "", 0)
    try:
        broker.decider.open(event)
    except StorageError:
        return False
    return True


@dataclass
class ExactlyOnce:
    releases: set[tuple[str, str, str]]  # (event_id, recipient, purpose)
    decisions: int
    tombstones: int
    quarantined: int
    aborted: int


def check_exactly_once(snap: Snapshot) -> ExactlyOnce:
    """Every release once, with exactly one audit entry; every chain intact."""
    problems = [f"audit partition {p}: {r.problem}" for p, r in snap.chains.items() if not r.ok]
    assert not problems, problems
    assert not snap.unreadable, f"stored events that do not open: {snap.unreadable[:5]}"

    decisions = snap.entries("decide")
    keys = Counter((e["event_id"], e["recipient"], e["purpose"]) for e in decisions)
    twice = [k for k, n in keys.items() if n > 1]
    assert not twice, f"decided more than once: {twice[:5]}"

    released = {(e["recipient"], e["purpose"], e["egress_offset"]): e for e in decisions
                if e["decision"] == "release"}
    tombstones = {(e["recipient"], e["purpose"], e["egress_offset"]): e
                  for e in snap.entries("tombstone")}
    records: set[tuple[str, str, int]] = set()
    tombstoned: Counter[tuple[str, str, int]] = Counter()
    for (recipient, purpose), items in snap.egress.items():
        for record in items:
            key = (recipient, purpose, record.offset)
            if header(record, "kind") == "tombstone":
                assert key in tombstones, f"tombstone without audit entry: {key}"
                assert record.value is None, f"a tombstone with a value: {key}"
                tombstoned[(recipient, purpose, snap.tombstone_for[key])] += 1
            else:
                records.add(key)
                assert key in released, f"release without audit entry: {key}"
    # compaction removes a released record once a tombstone ends it: only those may be gone
    compacted = {k for k in released if k not in records and k in tombstoned}
    assert len(records) + len(compacted) == len(released), (
        f"{len(released)} release entries for {len(records)} egress records "
        f"(+{len(compacted)} compacted after their tombstone)")
    assert len(tombstones) == sum(tombstoned.values())
    twice_t = [k for k, n in tombstoned.items() if n > 1]
    assert not twice_t, f"tombstoned more than once: {twice_t}"
    for key in tombstoned:
        assert key in released, f"tombstone for a record that was never released: {key}"

    positions = Counter(e["detail"]["position"] for e in snap.entries("quarantine"))
    assert all(n == 1 for n in positions.values()), "an input was quarantined twice"
    assert len(positions) == snap.quarantine, (
        f"{len(positions)} quarantine audit entries, {snap.quarantine} quarantined records")
    return ExactlyOnce({(e["event_id"], r, p) for (r, p, _), e in released.items()},
                       len(decisions), len(tombstones), len(positions), snap.aborted)


def lines_file(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def jsonl(events: list[dict[str, Any]]) -> list[str]:
    return [json.dumps(e) for e in events]


def ingest_lines(env: KafkaEnv, path: Path, lines: list[str], *options: str,
                 event_type: str = "politie.woninginbraak") -> str:
    """`lines` written to `path` and ingested as the police's by the CLI (exit 0 asserted);
    the CLI's output."""
    code, out = run_cli([*env.args(), "ingest", "--source", "politie", "--type", event_type,
                         *options, str(lines_file(path, lines))])
    assert code == 0, out
    return out


@contextlib.contextmanager
def kafka_env(bootstrap: str, root: Path, **kwargs: Any) -> Iterator[KafkaEnv]:
    env = KafkaEnv(bootstrap, root, **kwargs)
    try:
        yield env
    finally:
        env.cleanup()


class ProcessLog:
    """A child's stderr, collected by a thread, so a test can wait for a log line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.lines.append(line)

    def count(self, text: str) -> int:
        return sum(text in line for line in list(self.lines))

    def tail(self, n: int = 30) -> str:
        return "".join(self.lines[-n:])


def embedded_releases(data_dir: Path, now: str,
                      inputs: list[tuple[str, str, list[str]]]) -> set[tuple[str, str, str]]:
    """(event_id, recipient, purpose) released by the embedded backend for the same input."""
    broker = Broker(load_settings(overrides={"data_dir": data_dir}, environ={}))
    try:
        for source, event_type, lines in inputs:
            numbered = [(f"line {i}", line.encode()) for i, line in enumerate(lines, 1)]
            broker.ingest(source, event_type, numbered, parse_instant(now))
        schema = broker.registry.get("records.audit_entry")
        entries = [schema.decode(data) for _, data in broker.log.audit_rows()]
    finally:
        broker.close()
    return {(e["event_id"], e["recipient"], e["purpose"]) for e in entries
            if e["name"] == "decide" and e["decision"] == "release"}


def committed_tombstones(env: KafkaEnv) -> int:
    """Entries of the compacted expiry index (one per released record with a tombstone)."""
    reader = Clients(env.settings().kafka).reader("test-expiry")
    try:
        tp = TopicPartition(f"{env.name}.expiry", 0)
        return len(read_all(reader, [tp])[tp])
    finally:
        reader.close()


# Raw v0 requests, as a client that skips authentication would send them (correlation id 7).
_PROBES = {
    # ApiVersions, header v1: every listener without TLS answers it, even before SASL
    "ApiVersions": struct.pack(">hhih", 18, 0, 7, 5) + b"probe",
    # DescribeCluster, header v2 (flexible: empty tag buffers); a SASL listener wants its
    # handshake first and closes the connection
    "DescribeCluster": struct.pack(">hhih", 60, 0, 7, 5) + b"probe" + b"\0" + b"\0\0",
}


def answers_unauthenticated(port: int, request: str) -> bool:
    """Whether the listener on `port` answers `request` (a `_PROBES` name) sent in clear."""
    body = _PROBES[request]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        try:
            head = sock.recv(8)
        except OSError:  # reset: a TLS listener
            return False
    return len(head) == 8 and struct.unpack(">ii", head)[1] == 7


# -- secured nodes (SASL/SCRAM, optionally mTLS) with the covenant's ACLs -----------------------
SECURED_BROKER = "covenant-broker"
SECURED_PARTIES = ("politie", "om", "boa-hor-noord", "boa-hor-oost")


@contextlib.contextmanager
def secured_node(what: str, **options: Any) -> Iterator[Any]:
    """A started secured KafkaNode (a random password for the broker and each party),
    stopped afterwards; a node that will not start fails the test with its reason."""
    import pytest

    from tests.kafka_launcher import load_launcher

    launcher = load_launcher()
    users = {name: uuid.uuid4().hex for name in (SECURED_BROKER, *SECURED_PARTIES)}
    node = launcher.KafkaNode(secure=True, users=users, **options)
    try:
        node.start()
    except launcher.KafkaLauncherError as exc:
        pytest.fail(f"could not start {what}: {exc}", pytrace=False)
    try:
        yield node
    finally:
        node.stop()


def deploy_covenant_acls(admin_args: list[str], broker_config: Path, data_dir: Path) -> None:
    """`acl apply` as the admin (every binding of `acl plan` applied), then the broker
    principal creates its topics under its PREFIXED CREATE grant."""
    code, out = run_cli([*admin_args, "--json", "acl", "apply"])
    assert code == 0, out
    code, plan = run_cli([*admin_args, "--json", "acl", "plan"])
    assert json.loads(out)["applied"] == len(json.loads(plan)["acls"])
    Broker(load_settings(broker_config, {"backend": "kafka", "data_dir": data_dir},
                         environ={})).close()
