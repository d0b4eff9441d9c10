"""`covenant-broker schemas list|show`: the writer schemas a producer or consumer needs,
without the repository (broker/policy/catalog.py).

`list` prints each schema's name, CRC-64-AVRO fingerprint and where it is used; `show
FINGERPRINT|NAME` prints the full writer schema JSON (`--canonical` its Parsing Canonical
Form, the text the fingerprint is computed over). Reads the schemas and the covenant only.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from broker.config import Settings
from broker.model.schemas import SchemaRegistry
from broker.policy.catalog import SchemaEntry, catalog, find
from broker.policy.covenant import load_covenant

EXIT_OK = 0


def add_commands(command: Callable[[str, str], argparse.ArgumentParser],
                 global_options: Callable[[argparse.ArgumentParser, bool], None]) -> None:
    schemas = command("schemas", "schema discovery: the writer schemas and their fingerprints")
    commands = schemas.add_subparsers(dest="schemas_command", required=True)
    listing = commands.add_parser("list", help="every schema: name, CRC-64-AVRO fingerprint, "
                                  "where it is used")
    global_options(listing, True)
    show = commands.add_parser("show", help="print the writer schema of a fingerprint or name")
    global_options(show, True)
    show.add_argument("schema", metavar="FINGERPRINT|NAME")
    show.add_argument("--canonical", action="store_true",
                      help="print the Parsing Canonical Form (what the fingerprint covers)")


def entries(settings: Settings) -> list[SchemaEntry]:
    return catalog(SchemaRegistry(settings.schemas_dir), load_covenant(settings.policy_file()))


def cmd_schemas(args: argparse.Namespace, settings: Settings) -> int:
    found = entries(settings)
    if args.schemas_command == "list":
        if args.json:
            print(json.dumps({"schemas": [e.as_json() for e in found]}, ensure_ascii=False))
            return EXIT_OK
        for entry in found:
            version = "" if entry.version == "current" else f" [{entry.version}]"
            print(f"{entry.fingerprint}  {entry.name}{version}")
            for use in entry.used:
                print(f"    {use}")
        return EXIT_OK
    entry = find(found, args.schema)
    if args.json:
        print(json.dumps({**entry.as_json(), "schema": entry.schema.raw,
                          "canonical_form": entry.canonical_form()}, ensure_ascii=False))
    else:
        print(entry.canonical_form() if args.canonical else entry.writer_schema())
    return EXIT_OK
