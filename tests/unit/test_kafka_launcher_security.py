"""The launcher's secured and mTLS node properties, and the certificates of certs.py (no JVM)."""

from __future__ import annotations

import ipaddress
import re
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.kafka_launcher import load_launcher


def _properties(tmp_path: Path, **kwargs: object) -> dict[str, str]:
    launcher = load_launcher()
    target = tmp_path / "server.properties"
    launcher.render_properties(target, broker_port=9001, controller_port=9002,
                               log_dir=tmp_path / "data", **kwargs)
    text = target.read_text().replace("\\\n", "")  # join continued lines
    return dict(line.split("=", 1) for line in text.splitlines()
                if line and not line.startswith("#"))


def test_a_secured_node_authenticates_its_controller_and_has_no_anonymous_super_user(
        tmp_path: Path) -> None:
    props = _properties(tmp_path, admin_password="pw")
    assert props["super.users"] == "User:admin;User:kafka-node"
    assert "ANONYMOUS" not in (tmp_path / "server.properties").read_text()
    assert "CONTROLLER:SASL_PLAINTEXT" in props["listener.security.protocol.map"].split(",")
    assert props["sasl.mechanism.controller.protocol"] == "PLAIN"
    assert 'username="kafka-node"' in props["listener.name.controller.plain.sasl.jaas.config"]
    assert "SSL://" not in props["listeners"]


def test_an_mtls_node_adds_an_ssl_listener_and_puts_its_controller_on_ssl(
        tmp_path: Path) -> None:
    launcher = load_launcher()
    stores = launcher.MtlsStores(9003, tmp_path / "node.pem", tmp_path / "ca.crt",
                                 "RULE:^CN=([^,]+)(,.*)?$/$1/,DEFAULT")
    props = _properties(tmp_path, admin_password="pw", mtls=stores)
    assert props["listeners"] == ("SASL_PLAINTEXT://127.0.0.1:9001,SSL://127.0.0.1:9003,"
                                  "CONTROLLER://127.0.0.1:9002")
    assert set(props["listener.security.protocol.map"].split(",")) == {
        "SASL_PLAINTEXT:SASL_PLAINTEXT", "SSL:SSL", "CONTROLLER:SSL"}
    assert props["ssl.client.auth"] == "required"
    assert (props["ssl.keystore.type"], props["ssl.truststore.type"]) == ("PEM", "PEM")
    assert props["ssl.keystore.location"] == str(tmp_path / "node.pem")
    assert props["super.users"] == "User:admin;User:kafka-node"
    assert "sasl.mechanism.controller.protocol" not in props


def test_mtls_needs_a_secured_node(tmp_path: Path) -> None:
    launcher = load_launcher()
    with pytest.raises(launcher.KafkaLauncherError, match="mTLS needs"):
        launcher.KafkaNode(mtls=True)
    stores = launcher.MtlsStores(9003, tmp_path / "n.pem", tmp_path / "ca.crt", "DEFAULT")
    with pytest.raises(launcher.KafkaLauncherError, match="mTLS needs"):
        _properties(tmp_path, mtls=stores)


def test_certificates_name_their_principal_and_keys_are_owner_only(tmp_path: Path) -> None:
    certs = load_launcher().load_certs()
    ca = certs.make_ca(tmp_path)
    node = certs.issue(ca, "kafka-node", tmp_path, server=True)
    client = certs.issue(ca, "politie", tmp_path)
    for issued in (node, client):
        for path in (issued.key_path, issued.keystore_path):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        chain = x509.load_pem_x509_certificates(issued.cert_path.read_bytes())
        assert chain[1] == ca.cert
        chain[0].verify_directly_issued_by(ca.cert)
        # the keystore holds the key and the chain, the format Kafka's PEM keystore reads
        keystore = issued.keystore_path.read_bytes()
        assert keystore.startswith(b"-----BEGIN PRIVATE KEY-----")
        assert x509.load_pem_x509_certificates(keystore) == chain
        serialization.load_pem_private_key(issued.key_path.read_bytes(), None)
    leaf = x509.load_pem_x509_certificates(client.cert_path.read_bytes())[0]
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "politie"
    usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    server = x509.load_pem_x509_certificates(node.cert_path.read_bytes())[0]
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]


def test_the_mapping_rule_turns_a_cn_into_the_principal_name() -> None:
    # Kafka's RULE:pattern/replacement/ is a Java regex replace on the whole DN (RFC 2253)
    rule = load_launcher().load_certs().PRINCIPAL_MAPPING_RULES
    pattern, replacement = rule.removeprefix("RULE:").split(",DEFAULT")[0].strip("/").split("/")
    for dn, name in [("CN=politie", "politie"), ("CN=boa-hor-noord,O=Amstelveen", "boa-hor-noord")]:
        assert re.sub(pattern, replacement.replace("$1", r"\1"), dn) == name
