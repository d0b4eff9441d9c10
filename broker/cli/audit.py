"""`covenant-broker audit ...`: the verifiable audit log on the command line.

For the operator: verify, checkpoint, public-key. For an auditor, offline and with only the
pinned public key: verify-proof, verify-consistency. For the privacy officer: query,
subject-report, prove, consistency. Exit codes as in broker.cli: 0 done or intact, 1 a
check found a problem, 2 the command could not run.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from broker.app.confidential import confidential_pairs
from broker.app.service import Broker
from broker.audit.bundles import (
    BundleError,
    ProofUnavailableError,
    load_bundle,
    verify_consistency_bundle,
    verify_inclusion_bundle,
)
from broker.audit.checkpoint import VerifierKey, pinned_verifier_key
from broker.audit.report_html import render_html
from broker.audit.service import AuditLog
from broker.audit.store import QueryFilter
from broker.audit.subject_report import SECTIONS, valid_pseudonym, verify_subject_report
from broker.audit.tree import MissingNodeError
from broker.audit.verify import Verdict
from broker.audit.verify_derived import report_difference
from broker.cli.audit_export import add_export_command, run_export
from broker.cli.verify_options import add_verify_options, read_text, verify_pinned
from broker.clock import from_millis, iso_instant, now_utc, parse_instant, to_millis
from broker.config import Settings
from broker.errors import ConfigError, InputError, StorageError
from broker.keys import keyed_pseudonym, write_private
from broker.model.schemas import SchemaRegistry

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2
GlobalOptions = Callable[[argparse.ArgumentParser, bool], None]
__all__ = ["add_commands", "add_verify_options", "run"]  # main.py registers `verify` here

QUERY_COLUMNS = ["seq", "start_time", "name", "decision", "recipient", "purpose",
                 "event_type", "reason_code", "covenant_id", "covenant_version",
                 "legal_basis", "fields_released", "fields_withheld", "event_id", "logged_at"]
_TABLE_COLUMNS = [("seq", 7), ("start_time", 20), ("name", 10), ("decision", 8),
                  ("recipient", 18), ("purpose", 28), ("event_type", 24), ("reason_code", 0)]


def add_commands(commands: Any, global_options: GlobalOptions) -> None:
    """Register the audit subcommands (besides `verify`, which broker.cli defines)."""

    def sub(name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(name, help=help_text,
                                                              description=help_text)
        global_options(parser, True)
        return parser

    def pin(parser: argparse.ArgumentParser, required: bool) -> None:
        parser.add_argument("--public-key", required=required, metavar="K",
                            help="the pinned verifier key (name+id+key), or a file holding "
                            "it or a PEM public key (PEM needs --origin)")
        parser.add_argument("--origin", help="the pinned log origin (default: the key name)")

    integrate = sub("integrate", "Kafka: sequence the audit partitions' chains into the "
                    "verifiable log in the data directory, and sign a checkpoint")
    integrate.add_argument("--follow", action="store_true",
                           help="keep integrating until SIGTERM (one sidecar per data dir)")
    integrate.add_argument("--interval", type=float, default=5.0, metavar="SECONDS",
                           help="with --follow: pause between passes (default 5)")
    integrate.add_argument("--batch", type=int, default=500, metavar="N",
                           help="entries of each partition per round and transaction")
    sub("public-key", "print the checkpoint verifier key and PEM for auditors to pin")
    sub("checkpoint", "print the latest signed checkpoint (keep it to check the next one)")
    prove = sub("prove", "write a self-contained inclusion proof bundle for one entry")
    prove.add_argument("--entry", type=int, required=True, metavar="N")
    prove.add_argument("--out", type=Path, help="write the bundle here (default: stdout)")
    check = sub("verify-proof", "check an inclusion bundle offline (no store needed)")
    check.add_argument("bundle", type=Path)
    pin(check, True)
    cons = sub("consistency", "write a consistency bundle between two signed checkpoints")
    cons.add_argument("old_size", type=int)
    cons.add_argument("new_size", help="a checkpoint size, or 'latest'")
    cons.add_argument("--out", type=Path)
    check_cons = sub("verify-consistency", "check a consistency bundle offline")
    check_cons.add_argument("bundle", type=Path)
    pin(check_cons, True)
    check_report = sub("verify-report", "check every proof in a subject report offline")
    check_report.add_argument("report", type=Path)
    check_report.add_argument("--against-log", action="store_true",
                              help="also re-derive the person's entries from this data "
                                   "dir's log up to the checkpoint the report states and "
                                   "compare (finds entries a report leaves out)")
    pin(check_report, True)
    query = sub("query", "audit entries by recipient, purpose, decision, type and time")
    query.add_argument("--recipient")
    query.add_argument("--purpose")
    query.add_argument("--decision", help="release, withhold or expire")
    query.add_argument("--event-type")
    query.add_argument("--action", help="entry name: decide, tombstone, access, ...")
    query.add_argument("--since", help="start_time at or after this ISO instant")
    query.add_argument("--until", help="start_time before this ISO instant")
    query.add_argument("--limit", type=int)
    query.add_argument("--csv", action="store_true", help="CSV instead of a table")
    report = sub("subject-report", "every disclosure about one person (AVG art. 15), "
                 "with inclusion proofs")
    who = report.add_mutually_exclusive_group(required=True)
    who.add_argument("--bsn", help="pseudonymised with the subject key; never stored")
    who.add_argument("--pseudonym", help="the subject pseudonym (32 hex) from the log")
    report.add_argument("--html", type=Path, metavar="FILE",
                        help="also write a self-contained HTML page (Dutch)")
    report.add_argument("--out", type=Path, metavar="FILE", help="write the JSON report here")
    add_export_command(sub)  # audit export --format ldv


def run(args: argparse.Namespace, settings: Settings) -> int:
    command = args.audit_command
    if command == "verify-proof":
        return _verify_proof(args, settings)
    if command == "verify-consistency":
        return _verify_consistency(args)
    if command == "verify-report":
        return _verify_report(args, settings)
    broker = Broker(settings)
    try:
        if command == "integrate":  # the Kafka audit chains into the verifiable log
            from broker.cli import kafka_ops as cli_kafka  # noqa: PLC0415 - kafka-python only when used

            return cli_kafka.audit_integrate(args, broker)
        if broker.audit is None and command == "verify":
            return _verify_chain_only(args, broker)
        if broker.audit is None:
            raise ConfigError("the audit commands need a backend with an audit store "
                              f"(backend {settings.backend!r} has none yet)")
        return _ONLINE[command](args, broker, broker.audit)
    except MissingNodeError as exc:
        raise StorageError(f"the audit tree cache is damaged ({exc}); run `covenant-broker "
                           "audit verify`") from None
    finally:
        broker.close()


def _write_json(payload: dict[str, Any], out: Path | None, compact: bool) -> None:
    text = json.dumps(payload, ensure_ascii=False, indent=None if compact else 2)
    if out is None:
        print(text)
    else:
        _write_out(out, (text + "\n").encode())


def _write_out(path: Path, data: bytes) -> None:
    """A report or export file: it names people (pseudonyms, disclosures), so it is
    created 0600 from the start (broker/keys.py), like every personal-data file."""
    try:
        write_private(path, data)
    except OSError as exc:
        raise InputError(f"{path}: cannot be written: {exc.strerror}") from None


# -- operator ------------------------------------------------------------------------------

def _verify(args: argparse.Namespace, broker: Broker, audit: AuditLog) -> int:
    result = verify_pinned(args, audit)
    print(json.dumps(result.as_json()) if args.json else verdict_text(result))
    return EXIT_OK if result.ok else EXIT_FINDINGS


def verdict_text(result: Verdict) -> str:
    report = result.report
    if result.problem is not None:
        return f"audit log NOT intact: {result.problem}"
    text = (f"audit log intact: {report.entries} entries, head {report.head}\n"
            f"  root {report.root}; {report.checkpoints} signed checkpoints, the latest "
            f"at size {report.signed_size}")
    if report.unsigned:
        text += (f"\n  note: the last {report.unsigned} entries are not yet covered by a "
                 "signed checkpoint (the hash chain covers them)")
    return text


def _verify_chain_only(args: argparse.Namespace, broker: Broker) -> int:
    """A backend without an audit store: the hash chain is all there is to check."""
    report = broker.verify_audit()
    payload = {"ok": report.ok, "entries": report.entries, "head": report.head,
               "problem": report.problem}
    print(json.dumps(payload) if args.json else
          f"audit log intact: {report.entries} entries, head {report.head}" if report.ok
          else f"audit log NOT intact: {report.problem}")
    return EXIT_OK if report.ok else EXIT_FINDINGS


def _public_key(args: argparse.Namespace, broker: Broker, audit: AuditLog) -> int:
    payload = {"origin": audit.origin, "verifier_key": audit.verifier_key(),
               "public_key_pem": audit.public_key_pem()}
    if args.json:
        print(json.dumps(payload))
    else:
        print(f"origin: {audit.origin}\nverifier key: {audit.verifier_key()}\n")
        print(audit.public_key_pem(), end="")
    return EXIT_OK


def _checkpoint(args: argparse.Namespace, broker: Broker, audit: AuditLog) -> int:
    latest = audit.store.latest_checkpoint()
    if latest is None:
        raise InputError("the log has no signed checkpoint yet")
    if args.json:
        print(json.dumps({"size": latest.size,
                          "signed_at": iso_instant(from_millis(latest.signed_ms)),
                          "checkpoint": latest.note}))
    else:
        print(latest.note, end="")
    return EXIT_OK


# -- bundles -------------------------------------------------------------------------------

def _prove(args: argparse.Namespace, broker: Broker, audit: AuditLog) -> int:
    try:
        bundle = audit.prove(args.entry)
    except ProofUnavailableError as exc:
        raise InputError(str(exc)) from None
    _write_json(bundle, args.out, args.json)
    if args.out is not None:
        print(f"inclusion proof of entry {args.entry} in the signed tree of size "
              f"{bundle['tree_size']} written to {args.out}")
    return EXIT_OK


def _consistency(args: argparse.Namespace, broker: Broker, audit: AuditLog) -> int:
    new_size: int | None
    if args.new_size == "latest":
        new_size = None
    else:
        try:
            new_size = int(args.new_size)
        except ValueError:
            raise InputError(f"NEW_SIZE must be a number or 'latest', not "
                             f"{args.new_size!r}") from None
    try:
        bundle = audit.consistency(args.old_size, new_size)
    except ProofUnavailableError as exc:
        raise InputError(str(exc)) from None
    _write_json(bundle, args.out, args.json)
    if args.out is not None:
        print(f"consistency proof from size {bundle['old']['tree_size']} to "
              f"{bundle['new']['tree_size']} written to {args.out}")
    return EXIT_OK


def _pinned(args: argparse.Namespace) -> tuple[VerifierKey, str]:
    verifier = pinned_verifier_key(args.public_key, args.origin)
    return verifier, args.origin or verifier.name


def _verify_proof(args: argparse.Namespace, settings: Settings) -> int:
    verifier, origin = _pinned(args)
    schema = SchemaRegistry(settings.schemas_dir).get("records.audit_entry")
    try:
        result = verify_inclusion_bundle(load_bundle(read_text(args.bundle, "bundle")),
                                         verifier, origin, schema)
    except BundleError as exc:
        _verdict(args, False, {"problem": str(exc)}, f"proof NOT valid: {exc}")
        return EXIT_FINDINGS
    entry = result.entry or {}
    _verdict(args, True, {"log_index": result.index, "tree_size": result.checkpoint.size,
                          "origin": origin, "entry": entry},
             f"proof valid: entry {result.index} ({entry.get('name')}, "
             f"{entry.get('decision') or '-'}, {entry.get('recipient') or '-'}) is in the "
             f"log {origin} signed at size {result.checkpoint.size}")
    return EXIT_OK


def _verify_consistency(args: argparse.Namespace) -> int:
    verifier, origin = _pinned(args)
    try:
        result = verify_consistency_bundle(load_bundle(read_text(args.bundle, "bundle")),
                                           verifier, origin)
    except BundleError as exc:
        _verdict(args, False, {"problem": str(exc)}, f"consistency NOT proven: {exc}")
        return EXIT_FINDINGS
    _verdict(args, True, {"old_size": result.old.size, "new_size": result.new.size,
                          "origin": origin},
             f"consistent: the log {origin} at size {result.new.size} extends its signed "
             f"state at size {result.old.size}")
    return EXIT_OK


def _verify_report(args: argparse.Namespace, settings: Settings) -> int:
    verifier, origin = _pinned(args)
    try:
        report = load_bundle(read_text(args.report, "report"))
        proven = verify_subject_report(report, verifier, origin)
    except BundleError as exc:
        _verdict(args, False, {"problem": str(exc)}, f"report NOT proven: {exc}")
        return EXIT_FINDINGS
    if args.against_log:  # proofs show each item is in the log, not that none is missing
        difference = _against_log(settings, report)
        if difference is not None:
            _verdict(args, False, {"problem": difference, "proven": proven},
                     f"report NOT complete: {difference}")
            return EXIT_FINDINGS
    _verdict(args, True, {"proven": proven, "origin": origin},
             f"report proven: {proven} items are in the log {origin} as signed")
    return EXIT_OK


def _against_log(settings: Settings, report: dict[str, Any]) -> str | None:
    if not isinstance(report.get("complete_up_to"), dict):
        raise InputError("the report states no checkpoint it is complete up to "
                         "(`complete_up_to`): make it again with `audit subject-report`")
    broker = Broker(settings)
    try:
        if broker.audit is None:
            raise ConfigError("--against-log needs a backend with an audit store")
        return report_difference(broker.audit.store, broker.audit.schema, report,
                                 confidential_pairs(broker))
    finally:
        broker.close()


def _verdict(args: argparse.Namespace, ok: bool, payload: dict[str, Any], text: str) -> None:
    print(json.dumps({"ok": ok, **payload}, ensure_ascii=False) if args.json else text)


# -- privacy officer -----------------------------------------------------------------------

def _query(args: argparse.Namespace, broker: Broker, audit: AuditLog) -> int:
    if args.limit is not None and args.limit < 1:
        raise InputError("--limit must be 1 or more")
    where = QueryFilter(
        recipient=args.recipient, purpose=args.purpose, decision=args.decision,
        event_type=args.event_type, name=args.action,
        since_ms=to_millis(parse_instant(args.since)) if args.since else None,
        until_ms=to_millis(parse_instant(args.until)) if args.until else None)
    entries = audit.query(where, args.limit)
    out = sys.stdout
    if args.json:
        for entry in entries:
            out.write(json.dumps(entry, ensure_ascii=False) + "\n")
    elif args.csv:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(QUERY_COLUMNS)
        for entry in entries:
            writer.writerow([_cell(entry.get(c)) for c in QUERY_COLUMNS])
    else:
        _table(entries, out)
    return EXIT_OK


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    return str(value)


def _table(entries: Iterator[dict[str, Any]], out: Any) -> None:
    def line(values: list[str]) -> str:
        return " ".join(v.ljust(width) if width else v
                        for v, (_, width) in zip(values, _TABLE_COLUMNS, strict=True)).rstrip()

    out.write(line([name for name, _ in _TABLE_COLUMNS]) + "\n")
    count = 0
    for entry in entries:
        out.write(line([_cell(entry.get(name)) for name, _ in _TABLE_COLUMNS]) + "\n")
        count += 1
    out.write(f"({count} entries)\n")


def _subject_report(args: argparse.Namespace, broker: Broker, audit: AuditLog) -> int:
    if args.bsn is not None:
        bsn = args.bsn.strip()
        if not bsn.isdigit():
            raise InputError("--bsn must be digits only")
        pseudonym, id_type = keyed_pseudonym(broker.keys.subject_key(), f"bsn:{bsn}"), "bsn"
    else:
        pseudonym, id_type = args.pseudonym.strip().lower(), "pseudonym"
        if not valid_pseudonym(pseudonym):
            raise InputError("--pseudonym must be 32 hex digits")
    covenant = broker.covenant
    describe = {f"recipient:{name}": r.description for name, r in covenant.recipients.items()}
    describe.update({f"purpose:{name}": p.description for name, p in covenant.purposes.items()
                     if p.description})
    generated = iso_instant(parse_instant(args.now) if args.now else now_utc())
    report = audit.subject_report(pseudonym, id_type, generated, describe,
                                  confidential_pairs(broker))
    if args.html is not None:
        _write_out(args.html, render_html(report, covenant.zone).encode())
    if args.out is not None:
        _write_json(report, args.out, compact=False)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        summary = report["summary"]
        print(f"subject {pseudonym}: {summary['disclosures']} disclosures, "
              f"{summary['withheld']} withheld, {summary['accesses']} accesses"
              + (f", {summary['other']} other" if summary["other"] else ""))
        if report["restriction"]["applies"]:
            print("  a restriction applies: entries under a confidential purpose are left "
                  "out until lifted")
        for section in SECTIONS:
            for item in report[section]:
                print(f"  [{section}] #{item['seq']} {item['time']} {item['action']} "
                      f"{item['decision'] or ''} -> {item['recipient'] or '-'} "
                      f"({item['purpose'] or '-'})")
        if args.html is not None:
            print(f"HTML report written to {args.html}")
    return EXIT_OK


_ONLINE: dict[str, Callable[[argparse.Namespace, Broker, AuditLog], int]] = {
    "verify": _verify, "public-key": _public_key, "checkpoint": _checkpoint,
    "prove": _prove, "consistency": _consistency, "query": _query,
    "subject-report": _subject_report, "export": run_export,
}
