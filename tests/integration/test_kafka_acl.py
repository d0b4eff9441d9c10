"""The ACLs the covenant implies, on a real secured Kafka (SASL/SCRAM-SHA-512 + StandardAuthorizer).

One secured node for the module: the admin (super user) applies `covenant-broker acl plan`'s
bindings with `acl apply`; then every party authenticates as itself. A recipient reads its
own egress topic and is refused another's; a source writes its own ingress topic and is
refused another source's (the wrong-principal check: the ingress topic is the authenticated
source, broker/backends/kafka/acl.py); the broker principal serves an event end to end.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import NoError, TopicAuthorizationFailedError, for_code

from broker.backends.kafka import acl
from broker.backends.kafka.io import header
from tests import factories as f
from tests.integration.kafka_support import (
    SECURED_BROKER,
    SECURED_PARTIES,
    answers_unauthenticated,
    deploy_covenant_acls,
    run_cli,
    secured_node,
)

NOW = "2026-05-10T12:00:00Z"
BROKER, PARTIES = SECURED_BROKER, SECURED_PARTIES
NOORD = "covenant.egress.boa-hor-noord.surveillance-woninginbraak"
OOST = "covenant.egress.boa-hor-oost.surveillance-woninginbraak"
POLITIE_INGRESS = "covenant.ingress.politie.woninginbraak"
OM_INGRESS = "covenant.ingress.om.gebiedsverbod"


@dataclass
class Secured:
    bootstrap: str
    root: Path
    client_config: Callable[[str], dict[str, str]]
    controller_port: int = 0

    def config(self, user: str) -> Path:
        """A broker config file that authenticates as `user` (default topic prefix)."""
        sec = self.client_config(user)
        kafka: dict[str, Any] = {"bootstrap_servers": self.bootstrap, "partitions": 1,
                                 "poll_timeout_ms": 200, "session_timeout_ms": 6000,
                                 "heartbeat_interval_ms": 1000, **sec}
        path = self.root / f"config-{user}.yaml"
        path.write_text(yaml.safe_dump({"kafka": kafka, "log_level": "info",
                                        "log_format": "console"}))
        return path

    def args(self, user: str) -> list[str]:
        return ["--backend", "kafka", "--config", str(self.config(user)),
                "--data-dir", str(self.root / "data")]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    with secured_node("a secured Kafka") as node:
        env = Secured(node.bootstrap_servers, tmp_path_factory.mktemp("acl"),
                      node.client_config, node.controller_port)
        deploy_covenant_acls(env.args("admin"), env.config(BROKER), env.root / "data")
        yield env


def _consumer(env: Secured, recipient: str) -> KafkaConsumer:
    """A recipient's consumer in its own group (the group its ACLs name)."""
    return KafkaConsumer(bootstrap_servers=env.bootstrap, group_id=recipient,
                         enable_auto_commit=False, auto_offset_reset="earliest",
                         request_timeout_ms=10_000, **env.client_config(recipient))


def _producer(env: Secured, user: str) -> KafkaProducer:
    return KafkaProducer(bootstrap_servers=env.bootstrap, acks="all", max_block_ms=10_000,
                         **env.client_config(user))


def _metadata_error(env: Secured, user: str, topic: str) -> type[Exception]:
    """The error Kafka answers `user`'s metadata request for `topic` with."""
    admin = KafkaAdminClient(bootstrap_servers=env.bootstrap, request_timeout_ms=10_000,
                             **env.client_config(user))
    try:
        [meta] = admin.describe_topics([topic])
    finally:
        admin.close()
    return cast(type[Exception], for_code(meta["error_code"]))


def _quarantine_reasons(env: Secured) -> list[str]:
    """The reason codes of the quarantined input (read as the admin), to explain a failure."""
    admin = KafkaConsumer(bootstrap_servers=env.bootstrap, group_id=None,
                          auto_offset_reset="earliest", **env.client_config("admin"))
    try:
        records = _read(admin, "covenant.quarantine")
    finally:
        admin.close()
    return [str(header(r, "reason_code")) for r in records]


def _read(consumer: KafkaConsumer, topic: str, want: int = 0,
          timeout_s: float = 15.0) -> list[Any]:
    """Records of `topic`: until `want` arrived, or (want=0) for 3 s."""
    consumer.subscribe([topic])
    got: list[Any] = []
    deadline = time.monotonic() + (timeout_s if want else 3.0)
    while (not want or len(got) < want) and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=300).values():
            got.extend(records)
    return got


def test_a_recipient_reads_its_own_egress_topic_but_not_another_recipients(
        secured: Secured) -> None:
    noord = _consumer(secured, "boa-hor-noord")
    try:
        assert _read(noord, NOORD) == []  # authorised (and still empty)
    finally:
        noord.close()
    assert _metadata_error(secured, "boa-hor-noord", NOORD) is NoError
    # another recipient's stream, and the store: Kafka refuses even their metadata
    # (kafka-python's consumer only logs that refusal, so ask for the metadata directly)
    for forbidden in (OOST, "covenant.store"):
        assert _metadata_error(secured, "boa-hor-noord", forbidden) \
            is TopicAuthorizationFailedError
    assert _metadata_error(secured, "boa-hor-oost", OOST) is NoError


def test_a_source_writes_its_own_ingress_topic_but_not_another_sources(
        secured: Secured) -> None:
    politie = _producer(secured, "politie")
    try:
        meta = politie.send(POLITIE_INGRESS, b"{}").get(timeout=15)
        assert meta.topic == POLITIE_INGRESS
        # the wrong principal: politie may not pose as the source of om.gebiedsverbod
        with pytest.raises(TopicAuthorizationFailedError):
            politie.send(OM_INGRESS, json.dumps(f.gebiedsverbod()).encode()).get(timeout=15)
    finally:
        politie.close(timeout=5)


def test_the_broker_principal_serves_an_event_end_to_end(secured: Secured) -> None:
    event = f.woninginbraak()  # wijk noord: released to boa-hor-noord
    politie = _producer(secured, "politie")
    try:
        politie.send(POLITIE_INGRESS, json.dumps(event).encode(),
                     key=event["event_id"].encode()).get(timeout=15)
    finally:
        politie.close(timeout=5)
    code, out = run_cli([*secured.args(BROKER), "--json", "--now", NOW, "serve",
                         "--until-idle"])
    assert code == 0, out
    summary = json.loads(out.strip().splitlines()[-1])
    # (the test above wrote a bad record too); on failure, say why input was quarantined
    assert summary["stored"] >= 1, (summary, _quarantine_reasons(secured))

    noord = _consumer(secured, "boa-hor-noord")
    try:
        records = _read(noord, NOORD, want=1)
    finally:
        noord.close()
    assert records, "nothing released to boa-hor-noord"
    assert [header(r, "view") for r in records] == ["views.surveillance_woninginbraak"]


def test_the_controller_refuses_a_client_that_does_not_authenticate(secured: Secured) -> None:
    # The controller listener was PLAINTEXT with User:ANONYMOUS a super user: anyone on the
    # host could use it. Now it wants SASL/PLAIN (the broker is User:kafka-node) and, like
    # the client listener, answers nothing but ApiVersions before the handshake.
    assert answers_unauthenticated(secured.controller_port, "ApiVersions")  # it is Kafka
    assert not answers_unauthenticated(secured.controller_port, "DescribeCluster")


def test_prune_takes_back_a_grant_the_plan_no_longer_holds(secured: Secured) -> None:
    # A stale grant, as after an amendment that took noord's stream from oost.
    stale = [acl.to_kafka_acl(acl.AclBinding("User:boa-hor-oost", "TOPIC", NOORD, "LITERAL",
                                             op, "recipient")) for op in ("READ", "DESCRIBE")]
    admin = KafkaAdminClient(bootstrap_servers=secured.bootstrap, request_timeout_ms=10_000,
                             **secured.client_config("admin"))
    try:
        assert not admin.create_acls(stale)["failed"]
    finally:
        admin.close()
    deadline = time.monotonic() + 10  # ACL changes reach the authorizer through metadata
    while _metadata_error(secured, "boa-hor-oost", NOORD) is not NoError:
        assert time.monotonic() < deadline, "the stale grant never took effect"
        time.sleep(0.2)

    code, out = run_cli([*secured.args("admin"), "--json", "acl", "apply", "--prune"])
    assert code == 0, out
    report = json.loads(out)
    assert report["removed"] == 2
    assert sorted((b["principal"], b["operation"], b["resource_name"])
                  for b in report["stale"]) == [("User:boa-hor-oost", "DESCRIBE", NOORD),
                                                ("User:boa-hor-oost", "READ", NOORD)]
    deadline = time.monotonic() + 10
    while _metadata_error(secured, "boa-hor-oost", NOORD) is not TopicAuthorizationFailedError:
        assert time.monotonic() < deadline, "the pruned grant still works"
        time.sleep(0.2)
    # the plan itself is intact: noord still reads its own stream, a second prune is a no-op
    assert _metadata_error(secured, "boa-hor-noord", NOORD) is NoError
    code, out = run_cli([*secured.args("admin"), "--json", "acl", "apply", "--prune"])
    assert code == 0, out
    assert json.loads(out)["removed"] == 0
