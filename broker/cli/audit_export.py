"""`covenant-broker audit export --format ldv`: the audit log as LDV spans (OTLP JSON lines).

    covenant-broker audit export --format ldv --out log.otlp.jsonl
    covenant-broker audit export --format ldv --since 1200            # from seq 1200
    covenant-broker audit export --format ldv --since 2026-05-01T00:00:00Z --follow

Each line is one ExportTraceServiceRequest (broker/audit/export_ldv.py, docs/ldv.md).
`--follow` keeps writing new entries as the log grows, until SIGTERM or SIGINT (or after
`--limit` entries). An exported span's seq proves with `audit prove --entry SEQ` once a
signed checkpoint covers it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import IO, Any

from broker.app.service import Broker
from broker.audit.export_ldv import ExportPosition, Resource, follow
from broker.audit.service import AuditLog
from broker.clock import parse_instant, to_millis
from broker.errors import BrokerError, InputError

EXIT_OK = 0


def add_export_command(sub: Callable[[str, str], argparse.ArgumentParser]) -> None:
    export = sub("export", "write the log as Logboek Dataverwerkingen records: OpenTelemetry "
                 "spans, one OTLP JSON ExportTraceServiceRequest a line")
    export.add_argument("--format", choices=["ldv"], required=True, dest="export_format")
    export.add_argument("--since", metavar="SEQ|ISO",
                        help="from this seq, or entries that started at or after this instant")
    export.add_argument("--follow", action="store_true",
                        help="keep writing new entries until SIGTERM/SIGINT")
    export.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                        help="with --follow: pause between looks at the log (default 1)")
    export.add_argument("--limit", type=int, metavar="N", help="stop after N entries")
    export.add_argument("--batch", type=int, default=500, metavar="N",
                        help="entries per request line (default 500)")
    export.add_argument("--out", type=Path, metavar="FILE", help="default: stdout")


def _since(text: str | None) -> tuple[int, int | None]:
    """(first seq, start-time bound in ms) from --since."""
    if text is None:
        return 0, None
    if text.isdigit():
        return int(text), None
    try:
        return 0, to_millis(parse_instant(text))
    except (ValueError, BrokerError):
        raise InputError(f"--since {text!r} is neither a seq nor an ISO-8601 instant with "
                         "a zone") from None


def _open_out(path: Path | None) -> IO[str]:
    """The output stream; a file names pseudonyms, so it is made 0600 from the start."""
    if path is None:
        return sys.stdout
    try:
        if path.exists() and not path.is_file():  # a pipe or device: written as it is
            return path.open("w", encoding="utf-8")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)  # an earlier file's looser mode does not carry over
        return os.fdopen(fd, "w", encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot be written: {exc.strerror}") from None


def _version() -> str:
    try:
        return importlib.metadata.version("covenant-broker")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def run_export(args: argparse.Namespace, broker: Broker, audit: AuditLog) -> int:
    if args.batch < 1 or (args.limit is not None and args.limit < 0) or args.interval < 0:
        raise InputError("--batch must be at least 1, --limit and --interval not negative")
    start, since_ms = _since(args.since)
    position = ExportPosition(start)
    stopping: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    if args.follow:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, on_signal)
    out = _open_out(args.out)

    def write(item: dict[str, Any]) -> None:
        out.write(json.dumps(item, separators=(",", ":"), ensure_ascii=False) + "\n")
        out.flush()  # a follower's reader sees each batch as it is written

    try:
        follow(audit.store, audit.schema, Resource(_version(), audit.origin), position,
               write, since_ms=since_ms, batch=args.batch, limit=args.limit,
               interval=args.interval, stop=lambda: not args.follow or bool(stopping),
               activity_of=broker.activity_lookup())
    finally:
        if out is not sys.stdout:
            out.close()
    if args.out is not None:
        print(f"{position.entries} entries exported as LDV spans to {args.out} "
              f"(next seq {position.next_seq})")
    return EXIT_OK
