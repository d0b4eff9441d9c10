"""A small certificate authority for mTLS on a test or local Kafka node (``cryptography``).

``make_ca`` writes a self-signed CA; ``issue`` writes a certificate signed by it: for the
Kafka node (``server=True``: SAN ``127.0.0.1`` and ``localhost``, usable as server and as
client, because the in-process broker authenticates to its own controller with it) or for
one client principal (``CN=<name>``, client authentication only). Private keys are PKCS#8
PEM, written with mode 0600; with a ``password`` the key file is encrypted.

Files of ``issue(ca, "politie", directory)``::

    politie.crt   the certificate followed by the CA certificate (the chain)
    politie.key   the private key (0600)
    politie.pem   key + chain in one file (0600): Kafka's ``ssl.keystore.type=PEM`` keystore

Kafka maps a client certificate to a principal with ``ssl.principal.mapping.rules``
(``PRINCIPAL_MAPPING_RULES``): ``CN=politie`` becomes ``User:politie``.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=30)
CLOCK_SKEW = datetime.timedelta(minutes=5)
# The subject's DN as Kafka prints it (RFC 2253), e.g. "CN=politie" or "CN=politie,O=x":
# the CN becomes the principal name; a DN without a CN keeps Kafka's default (the whole DN).
PRINCIPAL_MAPPING_RULES = "RULE:^CN=([^,]+)(,.*)?$/$1/,DEFAULT"


@dataclass(frozen=True)
class Authority:
    """A CA: its key (in memory only) and its certificate (``cert_path``, PEM)."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    cert_path: Path


@dataclass(frozen=True)
class Issued:
    """The files of one issued certificate (see the module docstring)."""

    name: str
    cert_path: Path
    key_path: Path
    keystore_path: Path


def _write(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with `mode` from the start (a key is never readable by others)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_ca(directory: Path, name: str = "covenant-test-ca") -> Authority:
    """A new self-signed CA; its certificate is written to ``<directory>/<name>.crt``."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=False, content_commitment=False,
                          key_encipherment=False, data_encipherment=False,
                          key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / f"{name}.crt"
    _write(cert_path, _pem(cert), 0o644)
    return Authority(key, cert, cert_path)


def issue(ca: Authority, name: str, directory: Path, *, server: bool = False,
          password: str | None = None) -> Issued:
    """A certificate ``CN=<name>`` signed by `ca`, with its key (see the module docstring)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False)
    )
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        builder = builder.add_extension(
            x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ]),
            critical=False)
    cert = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False).sign(
        ca.key, hashes.SHA256())
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode()) if password
        else serialization.NoEncryption())
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8, encryption)
    chain = _pem(cert) + _pem(ca.cert)
    issued = Issued(name, directory / f"{name}.crt", directory / f"{name}.key",
                    directory / f"{name}.pem")
    _write(issued.cert_path, chain, 0o644)
    _write(issued.key_path, key_pem, 0o600)
    _write(issued.keystore_path, key_pem + chain, 0o600)
    return issued
