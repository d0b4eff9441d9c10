"""`acl plan`: the Kafka ACLs the covenant implies, checked against the covenant and layout."""

from __future__ import annotations

import json
import re
import tracemalloc
from pathlib import Path

import pytest

from broker.app.service import Broker
from broker.backends.kafka import acl
from broker.backends.kafka.acl import PREFIXED, AclBinding, PrincipalMap
from broker.backends.kafka.topics import Layout
from broker.cli import main
from broker.config.kafka import KafkaConfig
from broker.errors import ConfigError

CFG = KafkaConfig(topic_prefix="cov.", group_id="cb-group", transactional_id_prefix="cb-tx")


@pytest.fixture
def layout(broker: Broker) -> Layout:
    """The layout the Kafka backend builds (from the compiled plans)."""
    return Layout.build(CFG, broker.registry.event_types(), broker.plans)


@pytest.fixture
def bindings(broker: Broker, layout: Layout) -> list[AclBinding]:
    return acl.plan_acls(broker.covenant, layout)


def allowed(bindings: list[AclBinding], principal: str, operation: str, rtype: str,
            name: str) -> bool:
    return any(b.principal == principal and b.operation == operation
               and b.resource_type == rtype
               and (b.resource_name == name if b.pattern_type != PREFIXED
                    else name.startswith(b.resource_name))
               for b in bindings)


def test_a_recipient_never_reads_another_recipients_stream(
        broker: Broker, layout: Layout, bindings: list[AclBinding]) -> None:
    for recipient in broker.covenant.recipients:
        for other, purpose in layout.streams:
            topic = layout.names.egress(other, purpose)
            assert allowed(bindings, f"User:{recipient}", "READ", "TOPIC", topic) == \
                (other == recipient), (recipient, topic)
        # and nothing but its own egress topics and group
        own = [b for b in bindings if b.principal == f"User:{recipient}"]
        assert {b.operation for b in own} <= {"READ", "DESCRIBE"}
        assert all(b.resource_name.startswith(f"cov.egress.{recipient}.")
                   or (b.resource_type == "GROUP" and b.resource_name == recipient)
                   for b in own)
        assert all(b.pattern_type == "LITERAL" for b in own)


def test_a_source_writes_only_its_own_ingress_topics(
        broker: Broker, layout: Layout, bindings: list[AclBinding]) -> None:
    for source in broker.covenant.sources:
        mine = [b for b in bindings if b.principal == f"User:{source}"]
        assert {b.operation for b in mine} == {"WRITE", "DESCRIBE"}
        written = {b.resource_name for b in mine if b.operation == "WRITE"}
        assert written == {layout.names.ingress(t) for t in layout.event_types
                           if t.startswith(f"{source}.")}
        assert all(b.resource_type == "TOPIC" and b.pattern_type == "LITERAL" for b in mine)
        for topic in layout.all_topics():
            if not topic.startswith(f"cov.ingress.{source}."):
                assert not allowed(bindings, f"User:{source}", "WRITE", "TOPIC", topic)
                assert not allowed(bindings, f"User:{source}", "READ", "TOPIC", topic)


def test_every_egress_topic_has_exactly_the_recipients_the_covenant_names(
        broker: Broker, layout: Layout, bindings: list[AclBinding]) -> None:
    egress = [s.name for s in layout.specs() if s.role == "egress"]
    assert egress
    for topic in egress:
        recipient, purpose = topic.removeprefix("cov.egress.").split(".", 1)
        named = {r for rule in broker.covenant.purposes[purpose].recipients for r in rule.to}
        readers = {b.principal for b in bindings if b.resource_name == topic
                   and b.operation == "READ" and b.principal != "User:covenant-broker"}
        assert recipient in named
        assert readers == {f"User:{recipient}"}
    # and every recipient a purpose names has its egress topic
    named_streams = {(r, name) for name, p in broker.covenant.purposes.items()
                     for rule in p.recipients for r in rule.to}
    assert set(layout.streams) == named_streams
    # acl plan derives the layout without compiling plans: the same topics
    derived = acl.covenant_layout(CFG, broker.covenant, broker.registry.event_types())
    assert derived.all_topics() == layout.all_topics()


def test_the_broker_principal_has_what_serve_needs(
        layout: Layout, bindings: list[AclBinding]) -> None:
    me = "User:covenant-broker"
    names = layout.names
    for topic in layout.ingress_topics():
        assert allowed(bindings, me, "READ", "TOPIC", topic)
        assert allowed(bindings, me, "WRITE", "TOPIC", topic)  # forwards to the home partition
    for topic in [names.store, names.quarantine, names.audit, names.control, names.expiry,
                  names.keys, *(names.egress(r, p) for r, p in layout.streams)]:
        for op in ("READ", "WRITE", "DESCRIBE"):
            assert allowed(bindings, me, op, "TOPIC", topic), (op, topic)
    for topic in layout.all_topics():
        assert allowed(bindings, me, "CREATE", "TOPIC", topic)
        assert allowed(bindings, me, "DESCRIBE_CONFIGS", "TOPIC", topic)
    assert allowed(bindings, me, "READ", "GROUP", "cb-group")
    for txn in [CFG.partition_txn_id(p) for p in range(CFG.partitions)] + [CFG.commands_txn_id]:
        assert allowed(bindings, me, "WRITE", "TRANSACTIONAL_ID", txn)
    # only the broker reads the store
    assert {b.principal for b in bindings if b.resource_name == names.store} == {me}
    # nor the data keys
    assert {b.principal for b in bindings if b.resource_name == names.keys} == {me}


def test_a_principal_map_renames_principals_and_groups(broker: Broker, layout: Layout,
                                                       tmp_path: Path) -> None:
    path = tmp_path / "principals.yaml"
    path.write_text("broker: User:cb\nsources: {politie: 'User:CN=politie'}\n"
                    "recipients: {boa-hor-oost: User:boa1}\ngroups: {boa-hor-oost: g1}\n")
    who = acl.load_principal_map(path, broker.covenant)
    bindings = acl.plan_acls(broker.covenant, layout, who)
    assert allowed(bindings, "User:boa1", "READ", "GROUP", "g1")
    assert allowed(bindings, "User:CN=politie", "WRITE", "TOPIC",
                   "cov.ingress.politie.woninginbraak")
    assert allowed(bindings, "User:cb", "READ", "TOPIC", "cov.store")
    assert not any(b.principal in {"User:boa-hor-oost", "User:politie",
                                   "User:covenant-broker"} for b in bindings)


@pytest.mark.parametrize(("text", "message"), [
    ("recipients: {boa-nergens: User:x}\n", "recipients.boa-nergens: not a recipient"),
    ("sources: {fbi: User:x}\n", "sources.fbi: not a source"),
    ("brokers: User:x\n", "brokers: Extra inputs"),
    ("broker: nocolon\n", "is not TYPE:NAME")])
def test_a_bad_principal_map_names_the_key(broker: Broker, tmp_path: Path, text: str,
                                           message: str) -> None:
    path = tmp_path / "principals.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        acl.load_principal_map(path, broker.covenant)


def _alias_bomb(levels: int = 9, fan: int = 10) -> str:
    """10**9 strings once expanded, about 1.4 KB as written (issue 15 finding 3)."""
    lines = ["lol0: &a0 [" + ", ".join(['"lol"'] * fan) + "]"]
    lines += [f"lol{n}: &a{n} [" + ", ".join([f"*a{n - 1}"] * fan) + "]"
              for n in range(1, levels)]
    return "broker: User:cb\ngroups:\n" + "".join(f"  {line}\n" for line in lines)


def test_an_alias_bomb_principal_map_is_refused_before_it_is_built(
        broker: Broker, tmp_path: Path) -> None:
    """The principal map goes through the one bounded YAML loader: the first anchor is
    refused, by file and line, before any node exists (memory stays small)."""
    path = tmp_path / "principals.yaml"
    path.write_text(_alias_bomb())
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}: .*line 3 .*"
                                              r"anchor &a0 is not allowed"):
            acl.load_principal_map(path, broker.covenant)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024


@pytest.mark.parametrize(("text", "message"), [
    ("broker: User:cb\nsources: {politie: *who}\n", r"alias \*who is not allowed"),
    ("broker: User:a\nbroker: User:b\n", "key 'broker' is written twice"),
    ("broker: User:cb\n" + "#" * (300 * 1024) + "\n", "larger than the limit")])
def test_a_principal_map_is_bounded_like_every_yaml_file(
        broker: Broker, tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "principals.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}: .*{message}"):
        acl.load_principal_map(path, broker.covenant)


def test_kafka_acls_lines_group_operations_per_resource() -> None:
    lines = acl.kafka_acls_lines([
        AclBinding("User:a", "TOPIC", "t", "LITERAL", "READ", "recipient"),
        AclBinding("User:a", "TOPIC", "t", "LITERAL", "DESCRIBE", "recipient"),
        AclBinding("User:b", "TRANSACTIONAL_ID", "tx-", "PREFIXED", "WRITE", "broker"),
        AclBinding("User:b", "CLUSTER", "kafka-cluster", "LITERAL", "IDEMPOTENT_WRITE",
                   "broker")])
    assert lines == [
        "--add --allow-principal User:a --operation Read --operation Describe --topic t",
        "--add --allow-principal User:b --operation Write --transactional-id tx- "
        "--resource-pattern-type prefixed",
        "--add --allow-principal User:b --operation IdempotentWrite --cluster"]
    assert PrincipalMap().source("om") == "User:om"


def test_acl_plan_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["acl", "plan", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)["acls"]
    assert {b["role"] for b in plan} == {"source", "recipient", "broker"}
    assert main(["acl", "plan", "--format", "table"]) == 0
    assert capsys.readouterr().out.startswith("PRINCIPAL")
    assert main(["acl", "plan"]) == 0
    assert all(line.startswith("--add --allow-principal ")
               for line in capsys.readouterr().out.splitlines())


def test_prune_takes_exactly_what_the_plan_no_longer_holds(
        layout: Layout, bindings: list[AclBinding]) -> None:
    def existing(b: AclBinding) -> AclBinding:  # as list_acls reports it: no role
        return AclBinding(b.principal, b.resource_type, b.resource_name, b.pattern_type,
                          b.operation, "existing", b.host, b.permission)

    noord = layout.names.egress("boa-hor-noord", "surveillance-woninginbraak")
    extra = [  # an amendment took noord's stream from oost; a group grant to a stranger
        AclBinding("User:boa-hor-oost", "TOPIC", noord, "LITERAL", "READ", "existing"),
        AclBinding("User:stranger", "GROUP", "boa-hor-oost", "LITERAL", "READ", "existing"),
        AclBinding("User:covenant-broker", "TOPIC", "cov.old-topic", "LITERAL", "WRITE",
                   "existing"),
    ]
    foreign = [  # not this deployment's: another application's topic, the cluster
        AclBinding("User:boa-hor-oost", "TOPIC", "other.app.topic", "LITERAL", "READ",
                   "existing"),
        AclBinding("User:someone", "CLUSTER", "kafka-cluster", "LITERAL", "ALTER", "existing"),
        AclBinding("User:someone", "GROUP", "their-group", "LITERAL", "READ", "existing"),
    ]
    on_cluster = [existing(b) for b in bindings] + extra + foreign
    assert acl.stale_acls(on_cluster, bindings, layout) == sorted(extra)
    assert acl.stale_acls([existing(b) for b in bindings], bindings, layout) == []
    # the same binding allowed from one host only is not the planned one (any host)
    planned = next(b for b in bindings if b.resource_type == "TOPIC")
    narrowed = AclBinding(planned.principal, planned.resource_type, planned.resource_name,
                          planned.pattern_type, planned.operation, "existing", "10.0.0.1")
    assert acl.stale_acls([narrowed], bindings, layout) == [narrowed]
