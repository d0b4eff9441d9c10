"""mTLS on a real Kafka: every party authenticates with a client certificate of the node's CA.

One node for the module (`KafkaNode(secure=True, mtls=True)`): its SSL listener requires a
client certificate, and `ssl.principal.mapping.rules` turns CN=politie into User:politie,
the principal `acl plan` names. The admin applies the covenant's ACLs with `acl apply` over
mTLS; then the scenarios of test_kafka_acl.py run again, every client on its certificate.
A client without a certificate, or with one from another CA (even with a known CN), cannot
connect. The controller listener is SSL too, so no anonymous principal is a super user.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kafka import KafkaAdminClient
from kafka.errors import KafkaTimeoutError

import tests.integration.test_kafka_acl as acl_scenarios
from broker.config import load_settings
from tests.integration.conftest import _load_launcher
from tests.integration.kafka_support import (
    answers_unauthenticated,
    deploy_covenant_acls,
    secured_node,
)
from tests.integration.test_kafka_acl import BROKER, Secured


@dataclass
class Mtls:
    env: Secured  # its bootstrap is the SSL listener, its client_config the certificates
    node: Any  # the launcher's KafkaNode


@pytest.fixture(scope="module")
def mtls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mtls]:
    with secured_node("an mTLS Kafka", mtls=True) as node:
        env = Secured(node.ssl_bootstrap_servers, tmp_path_factory.mktemp("mtls"),
                      node.ssl_client_config)
        settings = load_settings(env.config(BROKER),
                                 {"backend": "kafka", "data_dir": env.root / "data"},
                                 environ={})
        assert settings.kafka.security_protocol == "SSL"
        deploy_covenant_acls(env.args("admin"), env.config(BROKER), env.root / "data")
        yield Mtls(env, node)


def _connects(bootstrap: str, security: dict[str, str]) -> bool:
    """Whether a client with these settings gets the cluster's metadata."""
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5_000,
                                 bootstrap_timeout_ms=5_000, **security)
    except KafkaTimeoutError:  # "Unable to bootstrap": the TLS handshake was refused
        return False
    try:
        admin.list_topics()
    finally:
        admin.close()
    return True


def test_a_recipient_reads_its_own_egress_topic_but_not_another_recipients(
        mtls: Mtls) -> None:
    acl_scenarios.test_a_recipient_reads_its_own_egress_topic_but_not_another_recipients(
        mtls.env)


def test_a_source_writes_its_own_ingress_topic_but_not_another_sources(mtls: Mtls) -> None:
    acl_scenarios.test_a_source_writes_its_own_ingress_topic_but_not_another_sources(
        mtls.env)


def test_the_broker_principal_serves_an_event_end_to_end(mtls: Mtls) -> None:
    acl_scenarios.test_the_broker_principal_serves_an_event_end_to_end(mtls.env)


def test_only_a_certificate_of_the_nodes_ca_gets_in(mtls: Mtls, tmp_path: Any) -> None:
    bootstrap, politie = mtls.env.bootstrap, mtls.node.ssl_client_config("politie")
    assert _connects(bootstrap, politie)
    no_certificate = {"security_protocol": "SSL", "ssl_cafile": politie["ssl_cafile"]}
    assert not _connects(bootstrap, no_certificate)
    # CN=politie, but signed by a CA the node does not trust
    certs = _load_launcher().load_certs()
    forged = certs.issue(certs.make_ca(tmp_path, "other-ca"), "politie", tmp_path)
    assert not _connects(bootstrap, {**politie, "ssl_certfile": str(forged.cert_path),
                                     "ssl_keyfile": str(forged.key_path)})


def test_the_controller_listener_has_no_anonymous_super_user(mtls: Mtls) -> None:
    launcher = _load_launcher()
    properties = (mtls.node.workdir / "server.properties").read_text().splitlines()
    assert f"super.users=User:admin;User:{launcher.NODE_PRINCIPAL}" in properties
    assert "ANONYMOUS" not in "\n".join(properties)
    # the SASL listener answers a plaintext request; the controller (formerly PLAINTEXT,
    # where anyone on the host was User:ANONYMOUS, a super user) now wants TLS first
    assert answers_unauthenticated(mtls.node.broker_port, "ApiVersions")
    assert not answers_unauthenticated(mtls.node.controller_port, "ApiVersions")
