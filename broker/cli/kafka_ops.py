"""The Kafka side of the command line: `serve`, `audit integrate`, and what `ingest` and
`audit verify` do there.

broker/cli/main.py parses the arguments and calls in here when the backend is Kafka, so the
kafka-python import is paid only by commands that use Kafka.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from typing import Any

from broker.app.assembly import declares
from broker.app.service import Broker
from broker.audit.sqlite_integrated import IntegratedAuditDb
from broker.audit.verify import pending_verdict
from broker.backends.kafka.audit_integrator import KafkaAuditIntegrator
from broker.backends.kafka.event_log import KafkaEventLog
from broker.backends.kafka.ingress import produce_lines
from broker.backends.kafka.runner import DenialTail, serve
from broker.cli.verify_options import verify_pinned
from broker.clock import parse_instant
from broker.config import Settings
from broker.errors import ConfigError, InputError
from broker.metrics import parse_listen
from broker.pipeline.ingest import Oversized
from broker.pipeline.port import IngressPublisher

EXIT_OK, EXIT_FINDINGS = 0, 1


def _emit(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    print(json.dumps(payload, ensure_ascii=False) if args.json else text, flush=True)


def _kafka_log(broker: Broker) -> KafkaEventLog:
    log = broker.backend.capability(KafkaEventLog)
    if log is None:
        raise ConfigError("this command needs the Kafka backend: pass --backend kafka "
                          "--bootstrap-servers HOST:PORT, or set backend: kafka")
    return log


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    if not declares(settings.backend, IngressPublisher):
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
        denials = None
        if getattr(args, "authorizer_log", None):
            from broker.backends.kafka import acl  # noqa: PLC0415

            denials = DenialTail(args.authorizer_log, acl.load_principal_map(
                getattr(args, "principal_map", None), broker.covenant))
        report = serve(broker, now=parse_instant(args.now) if args.now else None,
                       until_idle=args.until_idle,
                       metrics_listen=getattr(args, "metrics_listen", None),
                       denials=denials)
    finally:
        broker.close()
    payload = {"batches": report.batches, "consumed": report.consumed,
               "stored": report.stored, "quarantined": report.quarantined,
               "forwarded": report.forwarded, "released": report.released,
               "withheld": report.withheld, "tombstones": report.tombstones,
               "retries": report.retries, "partitions": report.partitions,
               "denials_audited": report.denials_audited, "revised": report.revised,
               "retractions": report.retractions}
    _emit(args, payload, f"serve stopped: {report.consumed} consumed, {report.stored} "
          f"stored, {report.quarantined} quarantined, {report.released} released, "
          f"{report.withheld} withheld, {report.tombstones} tombstones in "
          f"{report.batches} batches (partitions {report.partitions})"
          + (f"; {report.revised} corrections and withdrawals, {report.retractions} "
             "retractions" if report.revised else ""))
    return EXIT_OK


def ingest(args: argparse.Namespace, broker: Broker,
           lines: Iterable[tuple[int, bytes | Oversized]],
           signatures: dict[int, bytes] | None = None, traceparent: str | None = None) -> int:
    """Produce the lines (as the bounded line reader gives them) to the ingress topic and
    return; `serve` validates and decides. A line's signature (by line number) goes with
    it in the cb-sig header; an oversized line goes as its length, hash and prefix."""
    report = produce_lines(broker, args.source, args.event_type, lines, signatures,
                           traceparent)
    _emit(args, {"source": report.source, "event_type": report.event_type,
                 "topic": report.topic, "produced": report.produced,
                 "oversized": report.oversized,
                 "partitions": {str(k): v for k, v in sorted(report.partitions.items())}},
          f"{report.produced} records produced to {report.topic} (serve decides)"
          + (f"; {report.oversized} over max_event_bytes, produced as their length, "
             "SHA-256 and first bytes" if report.oversized else ""))
    return EXIT_OK


def _integrated(broker: Broker) -> IntegratedAuditDb:
    if broker.backend.integrated is None:
        raise ConfigError("this command needs the Kafka backend's integrated audit log")
    return broker.backend.integrated


def audit_verify(args: argparse.Namespace, broker: Broker) -> int:
    """The chain of every audit partition, the integrated log (its tree and checkpoints),
    and every integrated entry against its Kafka chain entry; exit 1 naming the first
    problem. Committed entries not integrated yet are pending: reported, and a problem only
    with --require-signed."""
    check = _kafka_log(broker).check_integrated(_integrated(broker))
    assert broker.audit is not None
    verdict = verify_pinned(args, broker.audit)
    integrated = verdict.as_json()
    pending = sum(check.pending.values())
    problem = pending_verdict(check.problem or verdict.problem, pending, args.require_signed)
    entries = sum(r.entries for r in check.chains.values())
    payload = {"ok": problem is None, "problem": problem, "entries": entries,
               "pending": pending, "partitions": check.as_json(), "integrated": integrated}
    head = (f"audit log intact: {entries} entries in {len(check.chains)} partition chains"
            if problem is None else f"audit log NOT intact: {problem}")
    lines = [head, f"  integrated log: {integrated['entries']} entries, root "
             f"{integrated['root']}; {integrated['checkpoints']} signed checkpoints, the "
             f"latest at size {integrated['signed_size']}"]
    lines += [f"  partition {p}: {r.entries} entries, head {r.head}, "
              f"{check.integrated.get(p, 0)} integrated" if r.ok
              else f"  partition {p}: NOT intact: {r.problem}"
              for p, r in check.chains.items()]
    if pending:
        lines.append(f"  note: {pending} committed entries are not integrated yet (run "
                     "`covenant-broker audit integrate`); their partition chains cover them")
    _emit(args, payload, "\n".join(lines))
    return EXIT_OK if problem is None else EXIT_FINDINGS


def audit_integrate(args: argparse.Namespace, broker: Broker) -> int:
    """`audit integrate [--follow]`: the audit chains into the verifiable log, as its only
    writer (an exclusive lock on the data directory's integrated log)."""
    if args.batch < 1:
        raise InputError("--batch must be 1 or more")
    if args.interval <= 0:
        raise InputError("--interval must be more than 0 seconds")
    log, store = _kafka_log(broker), _integrated(broker)
    store.lock_writer()
    integrator = KafkaAuditIntegrator(log, store, args.batch)
    if args.follow:
        report = integrator.follow(args.interval)
    else:
        integrator.run_once()
        report = integrator.report
    payload = {"integrated": report.integrated, "size": report.size,
               "checkpoint": report.checkpoint, "passes": report.passes,
               "partitions": {str(p): n for p, n in sorted(report.partitions.items())}}
    signed = (f"the latest signed checkpoint is at size {report.checkpoint}"
              if report.checkpoint is not None else "no signed checkpoint yet")
    _emit(args, payload, f"{report.integrated} audit entries integrated; the log holds "
          f"{report.size}; {signed}")
    return EXIT_OK
