"""covenant-broker: the command line. Other tools rely on these names; keep them.

Exit codes: 0 done; 1 a check found problems (policy check, audit verify); 2 the
command could not run (unknown source, type or recipient, unreadable file, bad config).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from broker import logs
from broker.app.assembly import declares
from broker.app.erasure import IngressPurge, erase_subject
from broker.app.service import Broker, IngestReport
from broker.audit import trace
from broker.audit.access import Accessor
from broker.cli import acl as cli_acl
from broker.cli import audit as cli_audit
from broker.cli import config as cli_config
from broker.cli import kafka_admin as cli_kafka_admin
from broker.cli import lifecycle as cli_lifecycle
from broker.cli import register as cli_register
from broker.cli import schemas as cli_schemas
from broker.cli import source as cli_source
from broker.cli import web as cli_web
from broker.clock import now_utc, parse_instant
from broker.config import Settings, load_settings
from broker.crypto.keystore import fields_sealed
from broker.errors import BrokerError, CovenantError, InputError
from broker.pipeline.ingest import read_lines
from broker.pipeline.port import PartitionChains
from broker.pipeline.signatures import read_signature_file

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a reader that went away


def _global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    default: Any = argparse.SUPPRESS if suppress else None
    parser.add_argument("--data-dir", type=Path, default=default,
                        help="data directory of the embedded backend (default ./data)")
    parser.add_argument("--now", default=default,
                        help="decision time as ISO-8601 with zone, e.g. 2026-05-01T09:00:00Z")
    parser.add_argument("--json", action="store_true",
                        default=argparse.SUPPRESS if suppress else False,
                        help="machine-readable output")
    parser.add_argument("--config", type=Path, default=default, help="config file (YAML)")
    parser.add_argument("--policy", type=Path, default=default, help="covenant file")
    parser.add_argument("--backend", choices=["embedded", "kafka"], default=default,
                        help="event log backend (default embedded)")
    parser.add_argument("--bootstrap-servers", default=default,
                        help="Kafka HOST:PORT[,HOST:PORT] (with --backend kafka)")


def _serve_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--until-idle", action="store_true",
                       help="process everything available, then exit 0")
    serve.add_argument("--instance-id", help="static group membership id (kafka.instance_id)")
    serve.add_argument("--metrics-listen", metavar="HOST:PORT",
                       help="serve /metrics, /healthz and /readyz (e.g. 127.0.0.1:9464)")
    serve.add_argument("--authorizer-log", type=Path, metavar="FILE",
                       help="Kafka's authorizer log: audit its denials as they come "
                       "(as `acl audit-denials` does)")
    serve.add_argument("--principal-map", type=Path, metavar="FILE",
                       help="with --authorizer-log: principals of the parties (as for "
                       "`acl plan`)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="covenant-broker",
        description="Brokers police, OM and municipality events under a covenant.")
    _global_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        _global_options(sub, suppress=True)
        return sub

    demo = command("demo", "the sample scenario end to end (embedded, pinned clock)")
    demo.add_argument("--seed", type=int, default=20260512)

    _ingest_arguments(command("ingest", "JSON lines in; decides synchronously on the "
                              "embedded backend"))

    consume = command("consume", "released records, one JSON object a line")
    consume.add_argument("--recipient", required=True)
    consume.add_argument("--purpose")
    consume.add_argument("--from-offset", type=int, default=0)

    _serve_options(command("serve", "run the Kafka pipeline (--backend kafka) until "
                           "SIGTERM/SIGINT"))

    policy = command("policy", "covenant tools")
    policy_cmds = policy.add_subparsers(dest="policy_command", required=True)
    check = policy_cmds.add_parser("check", help="lint a covenant, or every covenant file "
                                   "(*.yaml, *.yml) in a folder: exit 0 clean, 1 problems")
    _global_options(check, suppress=True)
    check.add_argument("path", nargs="?", type=Path)
    views = policy_cmds.add_parser("views", help="show or write the derived view schemas")
    _global_options(views, suppress=True)
    views.add_argument("--write", action="store_true")
    cli_lifecycle.add_policy_commands(policy_cmds, _global_options)

    cli_lifecycle.add_commands(command)

    control = command("control", "control events")
    control_cmds = control.add_subparsers(dest="control_command", required=True)
    theme = control_cmds.add_parser("theme", help="switch an intervention-team theme")
    _global_options(theme, suppress=True)
    theme.add_argument("state", choices=["on", "off"])
    theme.add_argument("name")

    subject = command("subject", "data subject rights")
    subject_cmds = subject.add_subparsers(dest="subject_command", required=True)
    erase = subject_cmds.add_parser("erase", help="crypto-shred one person's data")
    _global_options(erase, suppress=True)
    erase.add_argument("--bsn", required=True)
    erase.add_argument("--reason", required=True,
                       help="why (a case reference, not personal data)")

    audit = command("audit", "the audit log")
    audit_cmds = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_cmds.add_parser("verify", help="exit 0 intact; non-zero naming the "
                                   "first bad entry")
    _global_options(verify, suppress=True)
    cli_audit.add_verify_options(verify)
    cli_audit.add_commands(audit_cmds, _global_options)  # prove, query, subject-report, ...
    cli_config.add_commands(command, _global_options)  # config check
    cli_web.add_commands(command, _global_options)  # web, web token, web fg-user
    cli_acl.add_commands(command, _global_options)  # acl plan
    cli_source.add_commands(command, _global_options)  # source keygen, source sign
    cli_kafka_admin.add_commands(command, _global_options)  # kafka init
    cli_schemas.add_commands(command, _global_options)  # schemas list, schemas show
    cli_register.add_commands(command, _global_options)  # register (AVG art. 30)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    if args.policy is not None:
        overrides["policy"] = args.policy
    if args.backend is not None:
        overrides["backend"] = args.backend
    if args.bootstrap_servers is not None:
        overrides["kafka"] = {"bootstrap_servers": args.bootstrap_servers}
    return load_settings(args.config, overrides)


def _now(args: argparse.Namespace) -> datetime:
    return parse_instant(args.now) if args.now else now_utc()


def _emit(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    print(json.dumps(payload, ensure_ascii=False) if args.json else text)


def _open_input(name: str) -> AbstractContextManager[BinaryIO]:
    if name == "-":
        return nullcontext(sys.stdin.buffer)
    try:
        return Path(name).open("rb")
    except OSError as exc:
        raise InputError(f"{name}: cannot be read: {exc.strerror}") from None


def _ingest_arguments(ingest: argparse.ArgumentParser) -> None:
    ingest.add_argument("--source", required=True)
    ingest.add_argument("--type", required=True, dest="event_type")
    ingest.add_argument("file", nargs="?", help="JSON-lines file of new events, or - for "
                        "standard input")
    ingest.add_argument("--signatures", type=Path, metavar="FILE",
                        help="the source's detached Ed25519 signatures: line N is the "
                        "base64 signature of input line N (see `source sign`)")
    ingest.add_argument("--traceparent", metavar="HEADER",
                        help="W3C trace context of the source's operation that produced "
                        "this file (00-<trace id>-<span id>-<flags>): every event (or "
                        "correction or withdrawal) goes on in that trace, the span recorded "
                        "as the foreign operation")
    revision = ingest.add_mutually_exclusive_group()  # AVG art. 19, instead of FILE
    revision.add_argument("--correction", metavar="FILE",
                          help="corrections: each line the whole corrected event, with the "
                          "original event_id")
    revision.add_argument("--withdrawal", metavar="FILE",
                          help='withdrawals: each line {"event_id": ..., "reason": ...}')


def _signatures(args: argparse.Namespace) -> dict[int, bytes]:
    return read_signature_file(args.signatures) if getattr(args, "signatures", None) else {}


def _traceparent(args: argparse.Namespace) -> str | None:
    """The --traceparent given, checked here: a typing error is the operator's to fix (a
    source's bad header on Kafka is counted and ignored instead)."""
    value: str | None = getattr(args, "traceparent", None)
    try:
        parsed = trace.parse(value)
    except trace.BadTraceparent as exc:
        raise InputError(f"--traceparent: {exc}") from None
    return parsed.header() if parsed is not None else None


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    traceparent = _traceparent(args)  # refused before anything is opened or read
    broker = Broker(settings)
    try:
        broker.resolve_type(args.source, args.event_type)  # refuse before reading the input
        action = _ingest_action(args)
        revising = action != "event"
        if revising:  # on Kafka: published with an `action` header, and settled here
            with _open_input(args.file) as stream:
                report = broker.ingest_revisions_settled(
                    action, args.source, args.event_type,
                    read_lines(stream, settings.limits.max_event_bytes), _now(args),
                    _signatures(args), traceparent)
        elif broker.backend.ingress is not None:  # produce to the ingress topic; serve decides
            from broker.cli import kafka_ops as cli_kafka  # noqa: PLC0415 - kafka-python only when used

            with _open_input(args.file) as stream:  # a stream here too: a line is bounded
                return cli_kafka.ingest(args, broker, read_lines(
                    stream, settings.limits.max_event_bytes), _signatures(args), traceparent)
        else:
            report = _ingest_events(args, settings, broker, traceparent)
    finally:
        broker.close()
    _emit(args, _ingest_json(report), _ingest_text(report))
    return EXIT_OK


def _ingest_events(args: argparse.Namespace, settings: Settings, broker: Broker,
                   traceparent: str | None) -> IngestReport:
    """New events on the embedded backend: stored and decided here."""
    with _open_input(args.file) as stream:  # read as a stream: a line is bounded
        signatures = _signatures(args)
        inputs = ((f"line {n}", line) for n, line in
                  read_lines(stream, settings.limits.max_event_bytes))
        by_line = {f"line {n}": sig for n, sig in signatures.items()}
        return broker.ingest(args.source, args.event_type, inputs, _now(args),
                             by_line, traceparent)


def _ingest_action(args: argparse.Namespace) -> str:
    """"event", "correction" or "withdrawal"; sets args.file to the input to read."""
    for action in ("correction", "withdrawal"):
        path = getattr(args, action, None)
        if path is not None:
            if args.file is not None:
                raise InputError(f"give either FILE or --{action} FILE, not both")
            args.file = path
            return action
    if args.file is None:
        raise InputError("ingest needs FILE (new events), --correction FILE or "
                         "--withdrawal FILE")
    return "event"


def _ingest_json(report: IngestReport) -> dict[str, Any]:
    return {
        "source": report.source, "event_type": report.event_type,
        "accepted": report.accepted, "quarantined": len(report.quarantined),
        "quarantine": [{"position": q.position, "reason_code": q.reason_code,
                        "reason": q.reason} for q in report.quarantined],
        "dropped_fields": [{"position": p, "fields": f} for p, f in report.dropped_fields],
        "released": report.decided.released, "withheld": report.decided.withheld,
        "tombstones": report.tombstones,
        **({"action": report.action, "retractions": report.retractions}
           if report.action != "event" else {}),
    }


def _ingest_text(report: IngestReport) -> str:
    what = "" if report.action == "event" else f" ({report.action}s)"
    lines = [f"{report.event_type} from {report.source}{what}: {report.accepted} accepted, "
             f"{len(report.quarantined)} quarantined"]
    lines += [f"  quarantined {q.position}: {q.reason_code}: {q.reason}"
              for q in report.quarantined]
    lines += [f"  unknown fields dropped at {p}: {', '.join(f)}"
              for p, f in report.dropped_fields]
    lines.append(f"decisions: {report.decided.released} released, "
                 f"{report.decided.withheld} withheld"
                 + (f", {report.retractions} retractions" if report.retractions else "")
                 + (f", {report.tombstones} expiry tombstones" if report.tombstones else ""))
    return "\n".join(lines)


def _cli_accessor() -> Accessor:
    """Who ran a command that reads disclosed data, and from where (NEN 7513, BIO 8.15.01):
    the operating-system account and this machine (the web faces name a token or an FG
    account and a network address instead)."""
    try:
        user: str | None = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        user = None
    return Accessor("cli", origin=f"local:{socket.gethostname()}", user=user)


def cmd_consume(args: argparse.Namespace, settings: Settings) -> int:
    if args.from_offset < 0:
        raise InputError("--from-offset must be 0 or more")
    broker = Broker(settings)
    try:
        delivered = broker.consume(args.recipient, args.purpose, args.from_offset, _now(args),
                                   who=_cli_accessor())
    finally:
        broker.close()
    out = sys.stdout
    for item in delivered:
        out.write(json.dumps(item.as_json(), ensure_ascii=False) + "\n")
    return EXIT_OK


def cmd_policy(args: argparse.Namespace, settings: Settings) -> int:
    from broker.policy.lint import lint_all, write_views  # noqa: PLC0415 - only this command

    if args.policy_command in ("activate", "diff", "lift"):
        return cli_lifecycle.cmd_policy(args, settings)
    if args.policy_command == "views":
        written = write_views(settings, write=args.write)
        for line in written:
            print(line)
        return EXIT_OK
    path = args.path or settings.policy_file()
    checked = lint_all(path, settings.schemas_dir)  # a folder: each covenant file in it
    problems = [line for found in checked.values() for line in found]
    if args.json:
        payload: dict[str, Any] = {"path": str(path), "problems": problems}
        if path.is_dir():
            payload["files"] = {str(file): found for file, found in checked.items()}
        print(json.dumps(payload))
    else:
        for line in problems:
            print(line)
        for file, found in checked.items():
            if not found:
                print(f"{file}: ok")
    return EXIT_FINDINGS if problems else EXIT_OK


def cmd_control(args: argparse.Namespace, settings: Settings) -> int:
    broker = Broker(settings)
    try:
        now = _now(args)
        broker.switch_theme(args.name, args.state == "on", now)
        tombstones = broker.sweep_expiries(now)
    finally:
        broker.close()
    _emit(args, {"theme": args.name, "state": args.state, "effective": now.isoformat(),
                 "tombstones": tombstones},
          f"theme {args.name} switched {args.state} at {now.isoformat()}")
    return EXIT_OK


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    if not declares(settings.backend, PartitionChains) or args.audit_command != "verify":
        return cli_audit.run(args, settings)  # the verifiable log: broker/cli/audit.py
    broker = Broker(settings)
    try:
        if broker.backend.partition_chains is not None:  # one hash chain per audit partition
            from broker.cli import kafka_ops as cli_kafka  # noqa: PLC0415 - kafka-python only when used

            return cli_kafka.audit_verify(args, broker)
        report = broker.verify_audit()
    finally:
        broker.close()
    payload = {"ok": report.ok, "entries": report.entries, "head": report.head,
               "problem": report.problem}
    text = (f"audit log intact: {report.entries} entries, head {report.head}" if report.ok
            else f"audit log NOT intact: {report.problem}")
    _emit(args, payload, text)
    return EXIT_OK if report.ok else EXIT_FINDINGS


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from broker.app.demo import run_demo  # noqa: PLC0415 - only this command

    return run_demo(settings, explicit_data_dir=args.data_dir is not None, seed=args.seed,
                    now=parse_instant(args.now) if args.now else None, as_json=args.json)


def cmd_subject(args: argparse.Namespace, settings: Settings) -> int:
    broker = Broker(settings)
    started = time.perf_counter()
    try:
        outcome = erase_subject(broker, args.bsn, args.reason, _now(args),
                                _purge_ingress(broker))
    finally:
        broker.close()
    seconds = time.perf_counter() - started
    purged = outcome.ingress_partitions_purged
    erased = outcome.erased
    destroyed, notices = erased.destroyed, erased.notices
    fields = fields_sealed(destroyed)  # None on Kafka: the key topic keeps no counts
    payload = {"keys_destroyed": len(destroyed), "fields_unrecoverable": fields,
               "retention_dates": sorted({k.retention_until.isoformat() for k in destroyed}),
               "erasure_notices": dict(sorted(notices.items())),
               "ingress_partitions_purged": purged,
               "releases_open": erased.releases_open, "keys_missing": erased.keys_missing,
               "seconds": round(seconds, 4)}
    told = ("; erasure notices: " + ", ".join(f"{n} to {stream}"
                                              for stream, n in sorted(notices.items()))
            if notices else "; no recipient needed an erasure notice")
    unrecoverable = "" if fields is None else f", {fields} sealed fields unrecoverable"
    if erased.keys_missing:
        headline = (f"erasure INCOMPLETE: {erased.releases_open} releases recorded, 0 keys "
                    "destroyed: the audit names this person in released records, but no data "
                    "key of theirs was found to destroy (keys lost or replaced: a restored "
                    "key store or subject key?), so their data may still be readable")
    elif destroyed:
        headline = f"erased: {len(destroyed)} data keys destroyed{unrecoverable}"
    else:
        headline = "no data keys left for this person (already erased or never stored)"
    _emit(args, payload, headline + f"{told} ({seconds * 1000:.1f} ms)")
    return EXIT_FINDINGS if erased.keys_missing else EXIT_OK


def _purge_ingress(broker: Broker) -> IngressPurge | None:
    """On Kafka: the purge of the ingress records serve has consumed (the raw input); None
    on the embedded backend, which keeps no raw input."""
    purge = broker.backend.purge
    if purge is None:
        return None
    return purge.purge_consumed_ingress


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from broker.cli import kafka_ops as cli_kafka  # noqa: PLC0415 - kafka-python only when used

    return cli_kafka.cmd_serve(args, settings)


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "demo": cmd_demo, "ingest": cmd_ingest, "consume": cmd_consume, "policy": cmd_policy,
    "control": cmd_control, "audit": cmd_audit, "subject": cmd_subject,
    "replay": cli_lifecycle.cmd_replay, "keys": cli_lifecycle.cmd_keys, "serve": cmd_serve,
    "web": cli_web.cmd_web, "acl": cli_acl.cmd_acl, "source": cli_source.cmd_source,
    "kafka": cli_kafka_admin.cmd_kafka, "schemas": cli_schemas.cmd_schemas,
    "register": cli_register.cmd_register,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "config":  # reports a bad config itself, so before loading it
        return cli_config.cmd_config(args, _settings)
    try:
        settings = _settings(args)
        logs.configure(settings.log_level, settings.log_format)
        return COMMANDS[args.command](args, settings)
    except CovenantError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return EXIT_ERROR
    except BrokerError as exc:
        print(f"covenant-broker: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        # The reader went away (`... | head`): not an error of ours, and no traceback. Point
        # stdout at /dev/null so the interpreter's final flush cannot fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
