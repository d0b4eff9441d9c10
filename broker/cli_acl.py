"""`covenant-broker acl plan|apply`: the Kafka ACLs the covenant implies (broker/acl.py).

`plan` reads the config, the covenant and the schemas only: no Kafka connection, no keys.
The default output is one ``kafka-acls.sh`` argument line per principal and resource, to
run as ``kafka-acls.sh --bootstrap-server HOST:PORT --command-config ADMIN.properties LINE``.

`apply` creates the same bindings on the cluster (``--bootstrap-servers`` or
``kafka.bootstrap_servers``), authenticated with the ``kafka:`` section's SASL settings,
which must then name a principal that may alter ACLs (e.g. the super user ``User:admin``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from broker.config import Settings
from broker.model.schemas import SchemaRegistry
from broker.policy.covenant import load_covenant

EXIT_OK = 0


def add_commands(command: Callable[[str, str], argparse.ArgumentParser],
                 global_options: Callable[[argparse.ArgumentParser, bool], None]) -> None:
    acl = command("acl", "Kafka access control")
    commands = acl.add_subparsers(dest="acl_command", required=True)
    plan = commands.add_parser("plan", help="print the Kafka ACLs the covenant implies "
                               "(kafka-acls.sh arguments, a table, or --json)")
    global_options(plan, True)
    plan.add_argument("--principal-map", type=Path, metavar="FILE",
                      help="YAML: broker, sources, recipients (principals) and groups; "
                      "default User:<name> and the recipient's name as its group")
    plan.add_argument("--format", choices=["kafka-acls", "table"], default="kafka-acls")
    apply = commands.add_parser("apply", help="create the Kafka ACLs the covenant implies "
                                "on the cluster (authenticated by the kafka: SASL settings)")
    global_options(apply, True)
    apply.add_argument("--principal-map", type=Path, metavar="FILE",
                       help="as for `acl plan`")


def cmd_acl(args: argparse.Namespace, settings: Settings) -> int:
    from broker import acl  # noqa: PLC0415 - pulls in kafka-python; only this command

    covenant = load_covenant(settings.policy_file())
    layout = acl.covenant_layout(settings.kafka, covenant,
                                 SchemaRegistry(settings.schemas_dir).event_types())
    bindings = acl.plan_acls(covenant, layout,
                             acl.load_principal_map(args.principal_map, covenant))
    if args.acl_command == "apply":
        from broker.backends.kafka_io import Clients  # noqa: PLC0415

        admin = Clients(settings.kafka).admin()
        try:
            count = acl.apply_acls(admin, bindings)
        finally:
            admin.close()
        if args.json:
            print(json.dumps({"applied": count}))
        else:
            print(f"applied {count} ACL bindings to {settings.kafka.bootstrap_servers}")
        return EXIT_OK
    if args.json:
        print(json.dumps({"acls": [b.as_json() for b in bindings]}, indent=2))
    elif args.format == "table":
        print("\n".join(acl.table_lines(bindings)))
    else:
        print("\n".join(acl.kafka_acls_lines(bindings)))
    return EXIT_OK
