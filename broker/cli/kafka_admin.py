"""`covenant-broker kafka init`: create and check every topic, and print the layout.

Creates the topics the configuration and covenant imply that do not exist yet, checks the
ones that do (partitions and the settings the design relies on:
broker/backends/kafka/topics.py), and prints each topic with its key, value schema and
fingerprint, and who may write and read it (the ACL plan, broker/backends/kafka/acl.py,
with ``--principal-map`` as for `acl plan`). Idempotent. Run it before the sources produce:
Kafka here does not create topics on a first produce, so without it a source's first
write only times out. Exit 0 all topics as configured; 1 a topic exists with other settings
(each difference named); 2 the command could not run.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from broker.config import Settings
from broker.errors import ConfigError
from broker.model.schemas import SchemaRegistry
from broker.policy.covenant import load_covenant

EXIT_OK, EXIT_FINDINGS = 0, 1


def add_commands(command: Callable[[str, str], argparse.ArgumentParser],
                 global_options: Callable[[argparse.ArgumentParser, bool], None]) -> None:
    kafka = command("kafka", "Kafka topic administration")
    commands = kafka.add_subparsers(dest="kafka_command", required=True)
    init = commands.add_parser(
        "init", help="create and check every topic with its settings; print the layout "
        "(exit 1 when an existing topic differs)")
    global_options(init, True)
    init.add_argument("--principal-map", type=Path, metavar="FILE",
                      help="principals of the parties, as for `acl plan` (default "
                      "User:<name>)")


def cmd_kafka(args: argparse.Namespace, settings: Settings) -> int:
    # kafka-python only when this command runs
    from broker.backends.kafka import acl  # noqa: PLC0415
    from broker.backends.kafka.describe import describe_layout, table_lines  # noqa: PLC0415
    from broker.backends.kafka.io import Clients  # noqa: PLC0415
    from broker.backends.kafka.topics import TopicMismatchError, ensure_topics  # noqa: PLC0415

    if settings.backend != "kafka":
        raise ConfigError("kafka init needs the Kafka backend: pass --backend kafka "
                          "--bootstrap-servers HOST:PORT, or set backend: kafka")
    covenant = load_covenant(settings.policy_file())
    registry = SchemaRegistry(settings.schemas_dir)
    layout = acl.covenant_layout(settings.kafka, covenant, registry.event_types())
    bindings = acl.plan_acls(covenant, layout,
                             acl.load_principal_map(args.principal_map, covenant))
    rows = describe_layout(layout, covenant, registry, bindings)
    admin = Clients(settings.kafka).admin()
    problems: list[str] = []
    created: list[str] = []
    try:
        created = ensure_topics(admin, layout)
    except TopicMismatchError as mismatch:
        problems, created = mismatch.problems, mismatch.created
    finally:
        admin.close()
    if args.json:
        print(json.dumps({"ok": not problems, "bootstrap_servers":
                          settings.kafka.bootstrap_servers, "created": created,
                          "problems": problems, "topics": [r.as_json() for r in rows]},
                         ensure_ascii=False))
    else:
        print(f"{len(rows)} topics on {settings.kafka.bootstrap_servers}: {len(created)} "
              f"created, {len(rows) - len(created)} already there"
              + ("" if not problems else f"; {len(problems)} differ from the configuration"))
        print("\n".join(table_lines(rows)))
        for problem in problems:
            print(f"DIFFERS: {problem}")
    return EXIT_FINDINGS if problems else EXIT_OK
