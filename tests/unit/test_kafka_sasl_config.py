"""The Kafka SASL settings of the config, and the kafka-python ACL objects of a plan."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from broker.backends.kafka.acl import AclBinding, to_kafka_acl
from broker.backends.kafka.io import Clients
from broker.config.kafka import KafkaConfig

SASL = {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "covenant-broker", "sasl_plain_password": "s3cret-canary"}


def test_plaintext_by_default_adds_no_security_settings() -> None:
    cfg = KafkaConfig()
    assert cfg.security_settings() == {}
    assert "security_protocol" not in Clients(cfg)._common("admin")


def test_sasl_settings_reach_the_clients_and_the_password_stays_secret() -> None:
    cfg = KafkaConfig.model_validate(SASL)
    common = Clients(cfg)._common("admin")
    assert common["sasl_plain_password"] == "s3cret-canary"
    assert common["sasl_mechanism"] == "SCRAM-SHA-512"
    assert "s3cret-canary" not in repr(cfg)
    assert "s3cret-canary" not in json.dumps(cfg.model_dump(mode="json"))


@pytest.mark.parametrize("data", [
    {"security_protocol": "SASL_PLAINTEXT"},
    {**SASL, "sasl_plain_password": None},
    {"sasl_plain_username": "x"},
])
def test_incomplete_or_stray_sasl_settings_are_refused(data: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        KafkaConfig.model_validate(data)


def test_a_binding_becomes_a_kafka_python_acl() -> None:
    acl = to_kafka_acl(AclBinding("User:politie", "TOPIC", "covenant.ingress.politie.x",
                                  "LITERAL", "WRITE", "source"))
    assert acl.principal == "User:politie"
    assert acl.operation.name == "WRITE"
    assert acl.permission_type.name == "ALLOW"
    assert acl.resource_pattern.resource_type.name == "TOPIC"
    assert acl.resource_pattern.pattern_type.name == "LITERAL"
