"""`covenant-broker acl plan|apply`: the Kafka ACLs the covenant implies
(broker/backends/kafka/acl.py).

`plan` reads the config, the covenant and the schemas only: no Kafka connection, no keys.
The default output is one ``kafka-acls.sh`` argument line per principal and resource, to
run as ``kafka-acls.sh --bootstrap-server HOST:PORT --command-config ADMIN.properties LINE``.

`apply` creates the same bindings on the cluster (``--bootstrap-servers`` or
``kafka.bootstrap_servers``), authenticated with the ``kafka:`` section's SASL settings,
which must then name a principal that may alter ACLs (e.g. the super user ``User:admin``).
With ``--prune`` it also deletes the bindings on this deployment's topics, groups and
transactional ids that the plan no longer holds, so an amendment that takes a stream from a
recipient takes its READ too (`acl apply` alone only adds).

`audit-denials --log FILE` turns Kafka's authorizer denials (refused writes to ingress
topics, refused reads) into audit entries, reading on from where it stopped
(broker/backends/kafka/acl_denials.py); `serve --authorizer-log FILE` does the same as it runs.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from broker.clock import now_utc, parse_instant
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
    apply.add_argument("--prune", action="store_true",
                       help="also delete ACLs on this deployment's topics, groups and "
                       "transactional ids that the plan no longer holds (after a covenant "
                       "amendment took a stream from a recipient)")
    denials = commands.add_parser(
        "audit-denials", help="audit Kafka's authorizer denials: one entry per refused "
        "write to an ingress topic or refused read (reads on from where it stopped)")
    global_options(denials, True)
    denials.add_argument("--log", type=Path, required=True, metavar="FILE",
                         help="the Kafka node's log holding kafka.authorizer.logger lines "
                         "(kafka-authorizer.log, or the node log of deploy/kafka)")
    denials.add_argument("--principal-map", type=Path, metavar="FILE",
                         help="as for `acl plan`")


def cmd_acl(args: argparse.Namespace, settings: Settings) -> int:
    from broker.backends.kafka import acl  # noqa: PLC0415 - pulls in kafka-python; only this command

    covenant = load_covenant(settings.policy_file())
    layout = acl.covenant_layout(settings.kafka, covenant,
                                 SchemaRegistry(settings.schemas_dir).event_types())
    if args.acl_command == "audit-denials":
        return _audit_denials(args, settings)
    bindings = acl.plan_acls(covenant, layout,
                             acl.load_principal_map(args.principal_map, covenant))
    if args.acl_command == "apply":
        from broker.backends.kafka.io import Clients  # noqa: PLC0415

        admin = Clients(settings.kafka).admin()
        try:
            count = acl.apply_acls(admin, bindings)
            stale = acl.stale_acls(acl.list_acls(admin), bindings, layout) if args.prune else []
            removed = acl.delete_acls(admin, stale)
        finally:
            admin.close()
        if args.json:
            print(json.dumps({"applied": count, "removed": removed,
                              "stale": [b.as_json() for b in stale]}))
        else:
            print(f"applied {count} ACL bindings to {settings.kafka.bootstrap_servers}")
            if args.prune:
                print(f"removed {removed} ACL bindings the plan no longer holds")
                print("\n".join(acl.table_lines(stale)))
        return EXIT_OK
    if args.json:
        print(json.dumps({"acls": [b.as_json() for b in bindings]}, indent=2))
    elif args.format == "table":
        print("\n".join(acl.table_lines(bindings)))
    else:
        print("\n".join(acl.kafka_acls_lines(bindings)))
    return EXIT_OK


def _audit_denials(args: argparse.Namespace, settings: Settings) -> int:
    from broker.app.service import Broker  # noqa: PLC0415
    from broker.backends.kafka import acl, acl_denials  # noqa: PLC0415 - pulls in kafka-python

    broker = Broker(settings)
    try:
        principals = acl.load_principal_map(args.principal_map, broker.covenant)
        now = parse_instant(args.now) if args.now else now_utc()
        counts = acl_denials.audit_denials(broker, args.log, principals, now)
    finally:
        broker.close()
    payload = asdict(counts)
    if args.json:
        print(json.dumps(payload))
    else:
        print(f"{counts.entries} audit entries from {counts.denials} denials in "
              f"{counts.lines} new lines ({counts.ignored} not this deployment's, "
              f"{counts.unparseable} not understood"
              f"{'; the log restarted' if counts.restarted else ''})")
    return EXIT_OK
