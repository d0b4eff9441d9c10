"""CLI for the covenant over time: policy activate/diff, replay, keys rotate."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from broker.app import confidential, lifecycle
from broker.app.service import Broker, Delivered
from broker.clock import now_utc, parse_instant
from broker.config import Settings
from broker.errors import InputError

AddOptions = Callable[[argparse.ArgumentParser, bool], None]


def add_policy_commands(policy_cmds: Any, options: AddOptions) -> None:
    activate = policy_cmds.add_parser(
        "activate", help="make a covenant version active (needs two distinct approvers)")
    options(activate, True)
    activate.add_argument("file", type=Path)
    activate.add_argument("--approver", action="append", default=[], required=True,
                          help="an approving official; give it twice or more (four eyes)")
    lift = policy_cmds.add_parser(
        "lift", help="lift the restriction on a confidential purpose (four eyes: one "
        "proposes, another approves)")
    lift_cmds = lift.add_subparsers(dest="lift_command", required=True)
    for step, text in (("propose", "propose lifting the restriction (first pair of eyes)"),
                       ("approve", "approve another person's proposal: the restriction "
                        "ends and the purpose's entries show in subject reports")):
        parser = lift_cmds.add_parser(step, help=text, description=text)
        options(parser, True)
        parser.add_argument("--purpose", required=True)
        parser.add_argument("--covenant-version", type=int, required=True,
                            help="the covenant version whose restriction ends")
        parser.add_argument("--approver", required=True,
                            help="the official who proposes or approves")
    diff = policy_cmds.add_parser(
        "diff", help="dry run: what a proposed covenant would release differently")
    options(diff, True)
    diff.add_argument("current", type=Path)
    diff.add_argument("proposed", type=Path)
    diff.add_argument("--over-history", action="store_true", required=True,
                      help="evaluate both over the stored history (the only mode)")
    diff.add_argument("--since", help="only events ingested at or after this instant")


def add_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    replay = command("replay", "rebuild a recipient's stream from the store under a "
                               "covenant version (prints it; publishes nothing)")
    replay.add_argument("--recipient", required=True)
    replay.add_argument("--purpose")
    replay.add_argument("--covenant-version", type=int, required=True)
    keys = command("keys", "key management")
    keys_cmds = keys.add_subparsers(dest="keys_command", required=True)
    rotate = keys_cmds.add_parser("rotate", help="start a new pseudonymisation key version "
                                  "for one purpose")
    rotate.add_argument("--purpose", required=True)
    rotate.add_argument("--now", default=argparse.SUPPRESS)
    rotate.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS)
    rotate.add_argument("--json", action="store_true", default=argparse.SUPPRESS)


def _now(args: argparse.Namespace) -> Any:
    return parse_instant(args.now) if args.now else now_utc()


def cmd_policy(args: argparse.Namespace, settings: Settings) -> int:
    broker = Broker(settings)
    try:
        if args.policy_command == "activate":
            version = lifecycle.activate(broker, args.file, args.approver, _now(args))
            _print(args, {"activated": version, "file": str(args.file)},
                   f"covenant version {version} active from {_now(args).isoformat()}")
            return 0
        if args.policy_command == "lift":
            return _lift(args, broker)
        since = parse_instant(args.since) if args.since else None
        examined, impact = lifecycle.policy_diff(broker, args.current, args.proposed, since)
    finally:
        broker.close()
    if args.json:
        print(json.dumps({"events_examined": examined,
                          "streams": [s.as_json() for s in impact]}))
        return 0
    print(f"policy impact over {examined} stored events (nothing published)")
    if not impact:
        print("no differences")
    for s in impact:
        print(f"{s.recipient} / {s.purpose}: +{s.newly_released} newly released, "
              f"-{s.no_longer_released} no longer released, {s.changed_values} with "
              f"changed values")
        if s.fields_added:
            print(f"    fields added: {', '.join(sorted(s.fields_added))}")
        if s.fields_removed:
            print(f"    fields removed: {', '.join(sorted(s.fields_removed))}")
    return 0


def _lift(args: argparse.Namespace, broker: Broker) -> int:
    where = f"{args.purpose} (covenant version {args.covenant_version})"
    if args.lift_command == "propose":
        confidential.propose_lift(broker, args.purpose, args.covenant_version, args.approver,
                                  _now(args))
        _print(args, {"proposed": args.purpose, "covenant_version": args.covenant_version,
                      "by": args.approver},
               f"lift of the restriction on {where} proposed by {args.approver}; another "
               "person approves it with `policy lift approve`")
        return 0
    first, second = confidential.approve_lift(broker, args.purpose, args.covenant_version,
                                              args.approver, _now(args))
    _print(args, {"lifted": args.purpose, "covenant_version": args.covenant_version,
                  "approvers": [first, second]},
           f"restriction on {where} lifted by {first} and {second}: its entries show in "
           "subject reports from now on")
    return 0


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    broker = Broker(settings)

    def write(record: Delivered, view: bytes) -> None:  # streamed: memory stays flat
        sys.stdout.write(json.dumps(record.as_json(), ensure_ascii=False) + "\n")

    try:
        result = lifecycle.replay_into(broker, args.recipient, args.purpose,
                                       args.covenant_version,
                                       parse_instant(args.now) if args.now else None, write)
    finally:
        broker.close()
    print(f"replayed {result.count} records, sha256 of the view bytes "
          f"{result.digest}", file=sys.stderr)
    return 0


def cmd_keys(args: argparse.Namespace, settings: Settings) -> int:
    if args.keys_command != "rotate":
        raise InputError(f"unknown keys command {args.keys_command}")
    broker = Broker(settings)
    try:
        version = lifecycle.rotate_key(broker, args.purpose, _now(args))
    finally:
        broker.close()
    _print(args, {"purpose": args.purpose, "key_version": version},
           f"purpose {args.purpose}: pseudonymisation key version {version} from "
           f"{_now(args).isoformat()}; records after this link to each other, not to "
           "earlier ones")
    return 0


def _print(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    print(json.dumps(payload) if args.json else text)
