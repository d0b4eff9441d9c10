"""The Kafka side of the command line: `serve`, and what `ingest` and `audit verify` do there.

broker/cli.py parses the arguments and calls in here when the backend is Kafka, so the
kafka-python import is paid only by commands that use Kafka.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from broker.backends.kafka_ingress import produce_lines
from broker.backends.kafka_log import KafkaEventLog
from broker.clock import parse_instant
from broker.config import Settings
from broker.errors import ConfigError
from broker.metrics import parse_listen
from broker.pipeline.ingest import split_lines
from broker.runtime import Broker
from broker.serve import serve

EXIT_OK, EXIT_FINDINGS = 0, 1


def _emit(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    print(json.dumps(payload, ensure_ascii=False) if args.json else text, flush=True)


def _kafka_log(broker: Broker) -> KafkaEventLog:
    if not isinstance(broker.log, KafkaEventLog):
        raise ConfigError("this command needs the Kafka backend: pass --backend kafka "
                          "--bootstrap-servers HOST:PORT, or set backend: kafka")
    return broker.log


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    if settings.backend != "kafka":
        raise ConfigError("serve runs the Kafka pipeline: pass --backend kafka "
                          "--bootstrap-servers HOST:PORT (the embedded backend decides "
                          "synchronously in `ingest`)")
    if args.instance_id:
        settings = settings.model_copy(update={"kafka": settings.kafka.model_copy(
            update={"instance_id": args.instance_id})})
    if getattr(args, "metrics_listen", None):
        try:
            parse_listen(args.metrics_listen)
        except ValueError as exc:
            raise ConfigError(f"--metrics-listen: {exc}") from None
    broker = Broker(settings)
    try:
        report = serve(broker, now=parse_instant(args.now) if args.now else None,
                       until_idle=args.until_idle,
                       metrics_listen=getattr(args, "metrics_listen", None))
    finally:
        broker.close()
    payload = {"batches": report.batches, "consumed": report.consumed,
               "stored": report.stored, "quarantined": report.quarantined,
               "forwarded": report.forwarded, "released": report.released,
               "withheld": report.withheld, "tombstones": report.tombstones,
               "retries": report.retries, "partitions": report.partitions}
    _emit(args, payload, f"serve stopped: {report.consumed} consumed, {report.stored} "
          f"stored, {report.quarantined} quarantined, {report.released} released, "
          f"{report.withheld} withheld, {report.tombstones} tombstones in "
          f"{report.batches} batches (partitions {report.partitions})")
    return EXIT_OK


def ingest(args: argparse.Namespace, broker: Broker, data: bytes) -> int:
    """Produce the lines to the ingress topic and return; `serve` validates and decides."""
    report = produce_lines(broker, args.source, args.event_type, split_lines(data))
    _emit(args, {"source": report.source, "event_type": report.event_type,
                 "topic": report.topic, "produced": report.produced,
                 "partitions": {str(k): v for k, v in sorted(report.partitions.items())}},
          f"{report.produced} records produced to {report.topic} (serve decides)")
    return EXIT_OK


def audit_verify(args: argparse.Namespace, broker: Broker) -> int:
    """Verify the chain of every audit partition; exit 1 naming the first broken one."""
    reports = _kafka_log(broker).verify_audit_partitions()
    bad = {p: r for p, r in reports.items() if not r.ok}
    payload = {"ok": not bad, "entries": sum(r.entries for r in reports.values()),
               "partitions": {str(p): {"entries": r.entries, "head": r.head,
                                       "problem": r.problem} for p, r in reports.items()}}
    lines = [f"partition {p}: {r.entries} entries, head {r.head}" if r.ok
             else f"partition {p}: NOT intact: {r.problem}" for p, r in reports.items()]
    head = ("audit log intact" if not bad else "audit log NOT intact") + \
        f": {payload['entries']} entries in {len(reports)} partition chains"
    _emit(args, payload, "\n".join([head, *lines]))
    return EXIT_FINDINGS if bad else EXIT_OK
