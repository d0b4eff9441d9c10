"""The Kafka TLS (mTLS) settings of the config: checked at load, shown without secrets.

Real certificates and keys, made by deploy/kafka/certs.py with the `cryptography` package.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from broker import cli
from broker.backends.kafka.io import Clients
from broker.cli.config import SECRET
from broker.config import load_settings
from broker.config.kafka import KafkaConfig
from broker.errors import ConfigError
from tests.kafka_launcher import load_launcher

PASSWORD = "k3y-canary"  # a test key's password


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A CA, a client certificate with a plain key, one with an encrypted key, another CA's."""
    certs = load_launcher().load_certs()
    root = tmp_path_factory.mktemp("pki")
    ca = certs.make_ca(root / "ca")
    other = certs.make_ca(root / "other", "other-ca")
    return {"ca": ca.cert_path,
            "plain": certs.issue(ca, "covenant-broker", root / "plain"),
            "locked": certs.issue(ca, "covenant-broker", root / "locked", password=PASSWORD),
            "other": certs.issue(other, "covenant-broker", root / "other")}


def _ssl(pki: dict[str, Any], which: str = "plain", **extra: Any) -> dict[str, Any]:
    issued = pki[which]
    return {"security_protocol": "SSL", "ssl_cafile": str(pki["ca"]),
            "ssl_certfile": str(issued.cert_path), "ssl_keyfile": str(issued.key_path),
            **extra}


def _problems(tmp_path: Path, kafka: dict[str, Any]) -> list[str]:
    """The config errors of a file with this `kafka:` section, with the file name cut off."""
    config = tmp_path / "broker.yaml"
    config.write_text(yaml.safe_dump({"kafka": kafka}))
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={})
    return [line.removeprefix(f"{config}:") for line in str(caught.value).splitlines()]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("COVENANT_BROKER_")]:
        monkeypatch.delenv(key)


def test_ssl_settings_reach_the_clients(pki: dict[str, Any]) -> None:
    cfg = KafkaConfig.model_validate(_ssl(pki, ssl_check_hostname=False))
    common = Clients(cfg)._common("admin")
    assert {k: v for k, v in common.items() if k.startswith(("ssl_", "security"))} == {
        "security_protocol": "SSL", "ssl_cafile": str(pki["ca"]),
        "ssl_certfile": str(pki["plain"].cert_path),
        "ssl_keyfile": str(pki["plain"].key_path), "ssl_check_hostname": False}


def test_an_encrypted_key_opens_with_its_password_which_stays_secret(
        pki: dict[str, Any]) -> None:
    cfg = KafkaConfig.model_validate(_ssl(pki, "locked", ssl_password=PASSWORD))
    assert cfg.security_settings()["ssl_password"] == PASSWORD
    assert PASSWORD not in repr(cfg)
    assert PASSWORD not in json.dumps(cfg.model_dump(mode="json"))


def test_sasl_ssl_carries_both_the_sasl_and_the_tls_settings(pki: dict[str, Any]) -> None:
    cfg = KafkaConfig.model_validate({
        "security_protocol": "SASL_SSL", "ssl_cafile": str(pki["ca"]),
        "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "covenant-broker",
        "sasl_plain_password": "pw"})
    settings = cfg.security_settings()
    assert settings["security_protocol"] == "SASL_SSL"
    assert settings["sasl_plain_username"] == "covenant-broker"
    assert settings["ssl_cafile"] == str(pki["ca"])
    assert "ssl_certfile" not in settings


def test_config_check_shows_the_tls_files_and_masks_the_password(
        pki: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "broker.yaml"
    config.write_text(yaml.safe_dump({"kafka": _ssl(pki, "locked", ssl_password=PASSWORD)}))
    assert cli.main(["--json", "--config", str(config), "config", "check"]) == 0
    out = capsys.readouterr().out
    kafka = json.loads(out)["settings"]["kafka"]
    assert PASSWORD not in out
    assert kafka["ssl_password"] == SECRET
    assert kafka["ssl_keyfile"] == str(pki["locked"].key_path)
    assert kafka["ssl_certfile"] == str(pki["locked"].cert_path)
    assert (kafka["security_protocol"], kafka["ssl_check_hostname"]) == ("SSL", True)


def test_a_missing_file_is_refused_with_its_key(pki: dict[str, Any], tmp_path: Path) -> None:
    gone = tmp_path / "gone.pem"
    assert _problems(tmp_path, _ssl(pki, ssl_cafile=str(gone))) == [
        f"kafka.ssl_cafile: Value error, {gone}: cannot be read: No such file or directory"]


def test_a_file_without_a_certificate_is_refused(pki: dict[str, Any], tmp_path: Path) -> None:
    # a key where the certificate belongs: a plausible mix-up
    key = str(pki["plain"].key_path)
    assert _problems(tmp_path, _ssl(pki, ssl_certfile=key)) == [
        f"kafka.ssl_certfile: Value error, {key}: holds no PEM certificate "
        "(-----BEGIN CERTIFICATE-----)"]


def test_a_key_file_others_may_read_is_refused(pki: dict[str, Any], tmp_path: Path) -> None:
    loose = tmp_path / "loose.key"
    loose.write_bytes(pki["plain"].key_path.read_bytes())
    loose.chmod(0o640)
    assert _problems(tmp_path, _ssl(pki, ssl_keyfile=str(loose))) == [
        f"kafka.ssl_keyfile: Value error, {loose}: mode 0640 lets other users read the "
        f"private key; run `chmod 600 {loose}`"]
    loose.chmod(0o400)  # owner read-only is stricter than 0600: accepted
    assert KafkaConfig.model_validate(_ssl(pki, ssl_keyfile=str(loose))).ssl_keyfile == loose


@pytest.mark.parametrize(("which", "password", "problem"), [
    ("locked", None, "the private key is encrypted; set kafka.ssl_password"),
    ("locked", "wrong", "kafka.ssl_password does not open the private key"),
    ("plain", PASSWORD, "the private key is not encrypted; remove kafka.ssl_password"),
])
def test_a_key_that_cannot_be_opened_is_refused(
        pki: dict[str, Any], tmp_path: Path, which: str, password: str | None,
        problem: str) -> None:
    extra = {"ssl_password": password} if password else {}
    assert _problems(tmp_path, _ssl(pki, which, **extra)) == [
        f"kafka.ssl_keyfile: Value error, {pki[which].key_path}: {problem}"]


def test_a_key_of_another_certificate_is_refused(pki: dict[str, Any], tmp_path: Path) -> None:
    other_key = pki["other"].key_path
    assert _problems(tmp_path, _ssl(pki, ssl_keyfile=str(other_key))) == [
        f"kafka.ssl_keyfile: Value error, {other_key}: is not the private key of the "
        f"certificate in {pki['plain'].cert_path}"]


@pytest.mark.parametrize(("kafka", "problem"), [
    ({"security_protocol": "SSL"}, "security_protocol SSL needs ssl_certfile and "
     "ssl_keyfile (the broker authenticates with its client certificate)"),
    ({"ssl_cafile": "{ca}"}, "ssl_cafile need security_protocol SSL or SASL_SSL"),
    ({"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_plain_username": "b",
      "sasl_plain_password": "p", "ssl_certfile": "{cert}"},
     "ssl_certfile and ssl_keyfile go together"),
])
def test_incomplete_or_stray_tls_settings_are_refused(
        pki: dict[str, Any], tmp_path: Path, kafka: dict[str, Any], problem: str) -> None:
    names = {"{ca}": str(pki["ca"]), "{cert}": str(pki["plain"].cert_path)}
    kafka = {k: names.get(v, v) for k, v in kafka.items()}
    assert _problems(tmp_path, kafka) == [f"kafka: Value error, {problem}"]
