"""`covenant-broker register`: the AVG art. 30 register of the covenant in force.

    covenant-broker register                      # JSON on stdout
    covenant-broker register --format csv --out register.csv
    covenant-broker register --format html --out register.html   # one self-contained page

The covenant in force at `--now` (default: now) is the last activated version, else the
configured file; the register itself is built in broker/policy/register.py.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from broker.app.service import Broker
from broker.clock import now_utc, parse_instant, to_millis
from broker.config import Settings
from broker.errors import InputError
from broker.policy.register import FORMATS, build_register, render

EXIT_OK = 0


def add_commands(
    command: Callable[[str, str], argparse.ArgumentParser],
    global_options: Callable[[argparse.ArgumentParser, bool], None],
) -> None:
    register = command("register", "the register of processing activities (AVG art. 30) "
                       "of the covenant in force, as JSON, CSV or an HTML page")
    register.add_argument("--format", choices=FORMATS, default="json", dest="register_format")
    register.add_argument("--out", type=Path, metavar="FILE", help="default: stdout")


def cmd_register(args: argparse.Namespace, settings: Settings) -> int:
    now = parse_instant(args.now) if args.now else now_utc()
    broker = Broker(settings)
    try:
        covenant, sha256 = broker.active_covenant(to_millis(now))
    finally:
        broker.close()
    text = render(build_register(covenant, sha256), args.register_format)
    if args.out is None:
        print(text, end="")
        return EXIT_OK
    try:
        args.out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{args.out}: cannot be written: {exc.strerror}") from None
    print(f"register of covenant {covenant.covenant.id} version {covenant.covenant.version} "
          f"({len(covenant.purposes)} processing activities) written to {args.out}")
    return EXIT_OK
