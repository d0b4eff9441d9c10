"""Refused writes and reads on a real secured Kafka end up in the audit log.

A secured node (SASL/SCRAM + StandardAuthorizer, ACLs from `acl apply`) refuses politie's
write to om's ingress topic; the broker reads the node's authorizer lines (its log, where
the launcher's slf4j-simple writes ``kafka.authorizer.logger`` at INFO) with `acl
audit-denials`, and the audit then holds exactly one refused write naming politie's
principal and om's topic, and still verifies. `serve --authorizer-log` does the same in its
maintenance loop, for a recipient refused another recipient's stream.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import TopicAuthorizationFailedError

from broker.app.service import Broker
from broker.backends.kafka.audit_batch import entries_of
from broker.backends.kafka.io import Clients, read_all
from broker.config import load_settings
from tests import factories as f
from tests.integration.kafka_support import (
    SECURED_BROKER,
    SECURED_PARTIES,
    deploy_covenant_acls,
    run_cli,
    secured_node,
)

NOW = "2026-05-10T12:00:00Z"
BROKER, PARTIES = SECURED_BROKER, SECURED_PARTIES
OM_INGRESS = "covenant.ingress.om.gebiedsverbod"
OOST = "covenant.egress.boa-hor-oost.surveillance-woninginbraak"


@dataclass
class Node:
    bootstrap: str
    root: Path
    log: Path
    client_config: Callable[[str], dict[str, str]]

    def args(self, user: str) -> list[str]:
        kafka: dict[str, Any] = {"bootstrap_servers": self.bootstrap, "partitions": 1,
                                 "poll_timeout_ms": 200, "session_timeout_ms": 6000,
                                 "heartbeat_interval_ms": 1000, **self.client_config(user)}
        path = self.root / f"config-{user}.yaml"
        path.write_text(yaml.safe_dump({"kafka": kafka, "log_level": "info",
                                        "log_format": "console"}))
        return ["--backend", "kafka", "--config", str(path), "--data-dir",
                str(self.root / "data")]

    def denials(self, text: str, at_least: int = 1, timeout_s: float = 15.0) -> int:
        """Wait until the node's log holds `at_least` denial lines containing `text`."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = sum("is Denied operation" in line and text in line
                        for line in self.log.read_text(errors="replace").splitlines())
            if found >= at_least or time.monotonic() > deadline:
                return found
            time.sleep(0.2)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with secured_node("a secured Kafka") as kafka:
        assert kafka.log_path is not None
        env = Node(kafka.bootstrap_servers, tmp_path_factory.mktemp("acl-audit"),
                   kafka.log_path, kafka.client_config)
        deploy_covenant_acls(env.args("admin"), Path(env.args(BROKER)[3]), env.root / "data")
        yield env


def _audit(env: Node) -> list[dict[str, Any]]:
    """Every committed audit entry, read as the broker principal."""
    args = env.args(BROKER)
    broker = Broker(load_settings(Path(args[3]), {"backend": "kafka",
                                                  "data_dir": env.root / "data"}, environ={}))
    try:
        schema = broker.registry.get("records.audit_entry")
        reader = Clients(broker.settings.kafka).reader("test-audit")
        try:
            tps = [TopicPartition("covenant.audit", p)
                   for p in range(broker.settings.kafka.audit_partitions)]
            return [schema.decode(data) for tp, records in read_all(reader, tps).items()
                    for data in entries_of(schema, records, tp.partition)]
        finally:
            reader.close()
    finally:
        broker.close()


def test_a_refused_write_to_another_sources_topic_is_audited_once(node: Node) -> None:
    politie = KafkaProducer(bootstrap_servers=node.bootstrap, acks="all", max_block_ms=10_000,
                            **node.client_config("politie"))
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            politie.send(OM_INGRESS, json.dumps(f.gebiedsverbod()).encode()).get(timeout=15)
    finally:
        politie.close(timeout=5)
    assert node.denials("User:politie") == 1

    code, out = run_cli([*node.args(BROKER), "--json", "--now", NOW, "acl", "audit-denials",
                         "--log", str(node.log)])
    assert code == 0, out
    assert json.loads(out)["unparseable"] == 0
    code, again = run_cli([*node.args(BROKER), "--json", "--now", NOW, "acl",
                           "audit-denials", "--log", str(node.log)])
    assert code == 0, again
    assert json.loads(again)["entries"] == 0  # nothing new: read on from where it stopped

    refused = [e for e in _audit(node) if e["name"] == "write_refused"]
    assert len(refused) == 1, refused
    [entry] = refused
    assert entry["reason_code"] == "wrong_principal"
    assert (entry["source"], entry["event_type"]) == ("om", "om.gebiedsverbod")
    assert entry["detail"]["principal"] == "User:politie"
    assert entry["detail"]["topic"] == OM_INGRESS
    assert entry["detail"]["party"] == "politie"
    assert "127.0.0.1" not in json.dumps(entry, default=str)
    code, out = run_cli([*node.args(BROKER), "audit", "verify"])
    assert code == 0, out


def test_serve_audits_a_refused_read_from_the_authorizer_log(node: Node) -> None:
    before = node.denials(OOST, at_least=0, timeout_s=0)
    noord = KafkaConsumer(bootstrap_servers=node.bootstrap, group_id="boa-hor-noord",
                          enable_auto_commit=False, request_timeout_ms=10_000,
                          **node.client_config("boa-hor-noord"))
    try:
        noord.subscribe([OOST])
        with contextlib.suppress(TopicAuthorizationFailedError):
            for _ in range(3):
                noord.poll(timeout_ms=300)
    finally:
        noord.close()
    assert node.denials(OOST, at_least=before + 1) > before

    code, out = run_cli([*node.args(BROKER), "--json", "--now", NOW, "serve", "--until-idle",
                         "--authorizer-log", str(node.log)])
    assert code == 0, out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["denials_audited"] >= 1, summary
    refused = [e for e in _audit(node) if e["name"] == "access" and e["decision"] == "refused"
               and e["detail"].get("topic") == OOST]
    assert [e["recipient"] for e in refused] == ["boa-hor-noord"]
    assert int(refused[0]["detail"]["count"]) == node.denials(OOST, at_least=0, timeout_s=0)
    assert len([e for e in _audit(node) if e["name"] == "write_refused"]) == 1  # still one
    code, out = run_cli([*node.args(BROKER), "audit", "verify"])
    assert code == 0, out
