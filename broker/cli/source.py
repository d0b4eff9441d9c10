"""`covenant-broker source keygen|sign`: Ed25519 keys and signature files for a source.

The broker only verifies (broker/pipeline/signatures.py); these helpers are for a source
that has no signing of its own yet, for tests and for trying it out:

    covenant-broker source keygen --out keys/politie       # keys/politie.key, .pub
    covenant-broker source sign --key keys/politie.key --type politie.woninginbraak in.jsonl
    covenant-broker ingest --source politie --type woninginbraak --signatures in.jsonl.sig \\
        in.jsonl

and in the config: ``sources: {politie: {public_key: keys/politie.pub}}``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from broker.config import Settings
from broker.errors import InputError
from broker.pipeline.signatures import keygen, load_private_key, write_signature_file

EXIT_OK = 0


def add_commands(
    command: Callable[[str, str], argparse.ArgumentParser],
    global_options: Callable[[argparse.ArgumentParser, bool], None],
) -> None:
    source = command("source", "Ed25519 keys and signatures of a source's input")
    commands = source.add_subparsers(dest="source_command", required=True)
    gen = commands.add_parser("keygen", help="write STEM.key (private, 0600) and STEM.pub")
    global_options(gen, True)
    gen.add_argument("--out", type=Path, required=True, metavar="STEM")
    signer = commands.add_parser(
        "sign",
        help="the detached signature file of a JSON-lines "
        "input (line N: base64 signature of input line N)",
    )
    global_options(signer, True)
    signer.add_argument("--key", type=Path, required=True, help="the source's private key")
    signer.add_argument(
        "--type",
        required=True,
        dest="event_type",
        help="the full event type, e.g. politie.woninginbraak",
    )
    signer.add_argument("file", type=Path)
    signer.add_argument("--out", type=Path, help="default: FILE.sig")


def cmd_source(args: argparse.Namespace, settings: Settings) -> int:
    if args.source_command == "keygen":
        private, public = keygen(args.out)
        _emit(
            args,
            {"private_key": str(private), "public_key": str(public)},
            f"wrote {private} (keep it with the source) and {public} (for the broker's "
            f"sources.<name>.public_key)",
        )
        return EXIT_OK
    if "." not in args.event_type:
        raise InputError(
            f"--type {args.event_type!r}: give the full event type "
            f"(source.type), it is part of what is signed"
        )
    key = load_private_key(args.key)
    try:
        data = args.file.read_bytes()
    except OSError as exc:
        raise InputError(f"{args.file}: cannot be read: {exc.strerror}") from None
    out = args.out or args.file.with_name(args.file.name + ".sig")
    signed = write_signature_file(key, args.event_type, data, out)
    _emit(
        args,
        {"signatures": signed, "file": str(out)},
        f"{signed} signatures written to {out}",
    )
    return EXIT_OK


def _emit(args: argparse.Namespace, payload: dict[str, object], text: str) -> None:
    print(json.dumps(payload) if args.json else text)
