"""The Kafka ACLs a covenant implies: who may write, read and administer which topic.

A pure function of the covenant, the topic layout and a principal map:

- a source principal (default ``User:<source>``) may WRITE and DESCRIBE the ingress topics
  of the event types it owns (``<prefix>ingress.<source>.<type>``), nothing else;
- a recipient principal (default ``User:<recipient>``) may READ and DESCRIBE the egress
  topic ``<prefix>egress.<recipient>.<purpose>`` of each purpose that names it, and READ
  its consumer group (default: the recipient's name);
- the broker principal (default ``User:covenant-broker``) reads the ingress topics (and
  writes them: a record that arrives on the wrong partition is forwarded to its home
  partition; and deletes what it has consumed: DeleteRecords, kafka_purge.py), reads and
  writes the store, egress, quarantine, revisions, audit, control, expiry and data key topics,
  creates and checks the topics under the prefix, and uses its consumer group and its
  transactional ids.

Kafka denies what no ACL allows (with ``allow.everyone.if.no.acl.found=false``), so a
recipient cannot read another recipient's stream, nor a source the store.

The ingress topic is the authenticated source. Kafka does not tell a consumer which
principal produced a record, so the broker cannot check the producer per event. Instead
the check happens at the write: only the owning source's principal (and the broker) may
WRITE ``<prefix>ingress.<source>.<type>``, so a record on that topic was produced by that
source, and the pipeline takes the source from the topic (kafka_pipeline.py), never from
the payload. A wrong principal's write is refused by Kafka with
TopicAuthorizationFailed, and Kafka's authorizer log (``kafka.authorizer.logger``) records
the denial (tests/integration/test_kafka_acl.py proves the refusal on a real broker);
`acl audit-denials` / `serve --authorizer-log` turn those lines into audit entries
(broker/backends/kafka/acl_denials.py).

`apply_acls` creates the bindings through kafka-python's admin client; the caller
authenticates as a principal allowed to alter ACLs (a super user such as ``User:admin``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from broker.backends.kafka.errors import kafka_errors
from broker.backends.kafka.topics import Layout
from broker.config.kafka import KafkaConfig, TopicNames
from broker.config.yaml_file import YamlFileError, load_yaml_file
from broker.errors import ConfigError, StorageError
from broker.pipeline.ingest import source_of
from broker.policy.covenant import Covenant

TOPIC, GROUP, TXN, CLUSTER = "TOPIC", "GROUP", "TRANSACTIONAL_ID", "CLUSTER"
LITERAL, PREFIXED = "LITERAL", "PREFIXED"
READ, WRITE, DESCRIBE, CREATE = "READ", "WRITE", "DESCRIBE", "CREATE"
DELETE = "DELETE"  # DeleteRecords: the purge of consumed ingress records
DESCRIBE_CONFIGS, IDEMPOTENT_WRITE = "DESCRIBE_CONFIGS", "IDEMPOTENT_WRITE"
CLUSTER_NAME = "kafka-cluster"
# kafka-acls.sh spells operations in CamelCase
_CLI_OPERATION = {READ: "Read", WRITE: "Write", DESCRIBE: "Describe", CREATE: "Create",
                  DELETE: "Delete",
                  DESCRIBE_CONFIGS: "DescribeConfigs", IDEMPOTENT_WRITE: "IdempotentWrite"}
_CLI_RESOURCE = {TOPIC: "--topic", GROUP: "--group", TXN: "--transactional-id"}


@dataclass(frozen=True, order=True)
class AclBinding:
    """One ALLOW rule, as Kafka's AclBinding: principal, resource pattern, operation."""

    principal: str
    resource_type: str
    resource_name: str
    pattern_type: str
    operation: str
    role: str  # "source", "recipient" or "broker": who this rule is for
    host: str = "*"
    permission: str = "ALLOW"

    def as_json(self) -> dict[str, str]:
        return asdict(self)


class PrincipalMap(BaseModel):
    """``--principal-map FILE``: Kafka principals of the broker, sources and recipients,
    and the recipients' consumer groups. Anything left out takes its default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    broker: str = "User:covenant-broker"
    sources: dict[str, str] = {}
    recipients: dict[str, str] = {}
    groups: dict[str, str] = {}

    def source(self, name: str) -> str:
        return self.sources.get(name, f"User:{name}")

    def recipient(self, name: str) -> str:
        return self.recipients.get(name, f"User:{name}")

    def group(self, recipient: str) -> str:
        return self.groups.get(recipient, recipient)

    def check(self, covenant: Covenant, where: str) -> None:
        """Names must be the covenant's: a typo would leave a party without access."""
        problems = [f"{where}:sources.{s}: not a source of the covenant"
                    for s in self.sources if s not in covenant.sources]
        problems += [f"{where}:{key}.{r}: not a recipient of the covenant"
                     for key, names in (("recipients", self.recipients),
                                        ("groups", self.groups))
                     for r in names if r not in covenant.recipients]
        principals = [self.broker, *self.sources.values(), *self.recipients.values()]
        problems += [f"{where}: principal {p!r} is not TYPE:NAME (e.g. User:politie)"
                     for p in principals if ":" not in p.strip(":")]
        if problems:
            raise ConfigError("\n".join(problems))


def load_principal_map(path: Path | None, covenant: Covenant) -> PrincipalMap:
    if path is None:
        return PrincipalMap()
    try:  # bounded read, no aliases, no key written twice (see config.yaml_file)
        data: Any = load_yaml_file(path)[1] or {}
        mapping = PrincipalMap.model_validate(data)
    except YamlFileError as exc:  # names the file, and the line where it can
        raise ConfigError(f"the principal map {exc}") from None
    except ValidationError as exc:
        raise ConfigError("\n".join(
            f"{path}:{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            for err in exc.errors())) from None
    mapping.check(covenant, str(path))
    return mapping


def covenant_layout(cfg: KafkaConfig, covenant: Covenant, event_types: Iterable[str]) -> Layout:
    """The topic layout from the covenant alone (no plans compiled, no keys touched): the
    streams are the (recipient, purpose) pairs its purposes name."""
    streams = sorted({(r, name) for name, p in covenant.purposes.items()
                      for rule in p.recipients for r in rule.to})
    expiring = sorted({(r, name) for name, p in covenant.purposes.items() if p.expires_after
                       for rule in p.recipients for r in rule.to})
    views = sorted({(r, name, p.view, p.retention_days) for name, p in
                    covenant.purposes.items() for rule in p.recipients for r in rule.to})
    return Layout(cfg, TopicNames(cfg.topic_prefix), tuple(sorted(event_types)),
                  tuple(streams), tuple(expiring), tuple(views))


def plan_acls(covenant: Covenant, layout: Layout,
              principals: PrincipalMap | None = None) -> list[AclBinding]:
    """Every ALLOW binding the covenant implies, sorted and without duplicates."""
    who = principals or PrincipalMap()
    names, cfg = layout.names, layout.cfg
    out: set[AclBinding] = set()

    def allow(principal: str, role: str, rtype: str, name: str, ops: Iterable[str],
              pattern: str = LITERAL) -> None:
        out.update(AclBinding(principal, rtype, name, pattern, op, role) for op in ops)

    for event_type in layout.event_types:
        owner = source_of(event_type)
        if owner in covenant.sources:  # a type of no covenant source: only the broker
            allow(who.source(owner), "source", TOPIC, names.ingress(event_type),
                  (WRITE, DESCRIBE))
    for recipient, purpose in layout.streams:
        allow(who.recipient(recipient), "recipient", TOPIC, names.egress(recipient, purpose),
              (READ, DESCRIBE))
    for recipient in sorted({r for r, _ in layout.streams}):
        allow(who.recipient(recipient), "recipient", GROUP, who.group(recipient),
              (READ, DESCRIBE))

    broker = who.broker
    for topic in layout.ingress_topics():
        allow(broker, "broker", TOPIC, topic, (READ, WRITE, DESCRIBE, DELETE))
    for topic in (names.store, names.quarantine, names.revisions, names.audit, names.control,
                  names.expiry, names.keys, *(names.egress(r, p) for r, p in layout.streams)):
        allow(broker, "broker", TOPIC, topic, (READ, WRITE, DESCRIBE))
    if cfg.topic_prefix:  # ensure_topics creates missing topics and checks their configs
        allow(broker, "broker", TOPIC, cfg.topic_prefix, (CREATE, DESCRIBE, DESCRIBE_CONFIGS),
              PREFIXED)
    else:
        allow(broker, "broker", CLUSTER, CLUSTER_NAME, (CREATE, DESCRIBE_CONFIGS))
    allow(broker, "broker", GROUP, cfg.group_id, (READ, DESCRIBE))
    # partition p writes as <txn_prefix>-<p>, commands as <txn_prefix>-commands
    allow(broker, "broker", TXN, f"{cfg.txn_prefix}-", (WRITE, DESCRIBE), PREFIXED)
    allow(broker, "broker", CLUSTER, CLUSTER_NAME, (IDEMPOTENT_WRITE,))  # brokers < 3.0
    return sorted(out)


def to_kafka_acl(binding: AclBinding) -> Any:
    """The kafka-python ``ACL`` object of one binding."""
    from kafka.admin import (  # noqa: PLC0415 - kafka-python only when applying
        ACL,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePattern,
        ResourceType,
    )

    return ACL(principal=binding.principal, host=binding.host,
               operation=ACLOperation[binding.operation],
               permission_type=ACLPermissionType[binding.permission],
               resource_pattern=ResourcePattern(ResourceType[binding.resource_type],
                                                binding.resource_name,
                                                ACLResourcePatternType[binding.pattern_type]))


def apply_acls(admin: Any, bindings: list[AclBinding]) -> int:
    """Create every binding with ``admin`` (a kafka-python KafkaAdminClient authenticated as
    a principal that may alter ACLs); return how many were sent. Creating an ACL that
    exists already is a no-op in Kafka, so applying a plan twice is safe. Any refusal raises
    StorageError naming the binding and Kafka's error."""
    if not bindings:
        return 0
    with kafka_errors("creating ACLs"):
        result = admin.create_acls([to_kafka_acl(b) for b in bindings])
    failed = result.get("failed") or []
    if failed:
        raise StorageError("Kafka refused ACLs:\n" + "\n".join(
            f"  {acl}: {error}" for acl, error in failed))
    return len(bindings)


def _key(binding: AclBinding) -> tuple[str, ...]:
    """What Kafka knows of a binding (the plan's `role` is ours, not Kafka's)."""
    return (binding.principal, binding.host, binding.operation, binding.permission,
            binding.resource_type, binding.resource_name, binding.pattern_type)


def stale_acls(existing: Iterable[AclBinding], plan: list[AclBinding], layout: Layout
               ) -> list[AclBinding]:
    """The bindings on this deployment's resources that the plan no longer holds.

    This deployment's resources: the topics under its topic prefix (only the plan's own
    topics when the prefix is empty), and the groups and transactional-id patterns the plan
    names. The cluster resource and everything else on a shared cluster are left alone.
    A recipient dropped from a purpose by a covenant amendment loses its READ this way.
    """
    planned = {_key(b) for b in plan}
    prefix = layout.cfg.topic_prefix
    plan_topics = {b.resource_name for b in plan if b.resource_type == TOPIC}
    named = {(b.resource_type, b.resource_name) for b in plan if b.resource_type in (GROUP, TXN)}

    def ours(b: AclBinding) -> bool:
        if b.resource_type == TOPIC:
            return b.resource_name.startswith(prefix) if prefix else (
                b.resource_name in plan_topics)
        return (b.resource_type, b.resource_name) in named

    return sorted(b for b in existing if ours(b) and _key(b) not in planned)


def list_acls(admin: Any) -> list[AclBinding]:
    """Every ACL binding on the cluster, as AclBindings (role "existing")."""
    from kafka.admin import (  # noqa: PLC0415 - kafka-python only when applying
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePatternFilter,
        ResourceType,
    )

    every = ACLFilter(principal=None, host=None, operation=ACLOperation.ANY,
                      permission_type=ACLPermissionType.ANY,
                      resource_pattern=ResourcePatternFilter(
                          ResourceType.ANY, None, ACLResourcePatternType.ANY))
    with kafka_errors("listing ACLs"):
        acls, error = admin.describe_acls(every)
    if getattr(error, "errno", 0):
        raise StorageError(f"Kafka refused to list ACLs: {error}")
    return [AclBinding(a.principal, a.resource_pattern.resource_type.name,
                       a.resource_pattern.resource_name,
                       a.resource_pattern.pattern_type.name, a.operation.name, "existing",
                       a.host, a.permission_type.name) for a in acls]


def delete_acls(admin: Any, bindings: list[AclBinding]) -> int:
    """Delete exactly these bindings; return how many Kafka deleted."""
    if not bindings:
        return 0
    with kafka_errors("deleting ACLs"):
        results = admin.delete_acls([to_kafka_acl(b) for b in bindings])
    failed = [(acl, error) for acl, _, error in results if getattr(error, "errno", 0)]
    if failed:
        raise StorageError("Kafka refused to delete ACLs:\n" + "\n".join(
            f"  {acl}: {error}" for acl, error in failed))
    return sum(len(deleted) for _, deleted, _ in results)


def kafka_acls_lines(bindings: list[AclBinding]) -> list[str]:
    """``kafka-acls.sh`` arguments, one line per principal and resource (all operations)."""
    grouped: dict[tuple[str, str, str, str], list[str]] = {}
    for b in bindings:
        grouped.setdefault((b.principal, b.resource_type, b.resource_name, b.pattern_type),
                           []).append(b.operation)
    lines = []
    for (principal, rtype, name, pattern), ops in grouped.items():
        parts = ["--add", "--allow-principal", principal]
        parts += [f"--operation {_CLI_OPERATION[op]}" for op in ops]
        parts.append("--cluster" if rtype == CLUSTER else f"{_CLI_RESOURCE[rtype]} {name}")
        if pattern == PREFIXED:
            parts.append("--resource-pattern-type prefixed")
        lines.append(" ".join(parts))
    return lines


def table_lines(bindings: list[AclBinding]) -> list[str]:
    rows = [("PRINCIPAL", "OPERATION", "RESOURCE", "PATTERN", "NAME")]
    rows += [(b.principal, b.operation, b.resource_type, b.pattern_type, b.resource_name)
             for b in bindings]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join([*(c.ljust(w) for c, w in zip(r, widths, strict=False)), r[-1]])
            for r in rows]
