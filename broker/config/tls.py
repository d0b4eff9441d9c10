"""Checks of the TLS files a Kafka client names (`kafka.ssl_*`), run when the config loads.

kafka-python reads these files only when it first connects, and then reports a bad one as
an SSL error deep in a connection attempt. Checking them at load turns that into a config
error that names the key, the file and what to do.

A private key file that its group or other users may read (mode looser than 0600) is
refused, not warned about: the key is the broker's Kafka identity, and a warning in a log
is easy to miss. ``chmod 600`` (or a Kubernetes secret's ``defaultMode: 0400``) fixes it.
"""

from __future__ import annotations

import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

KEY_MODE_MASK = 0o077  # group and other permission bits


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory, not a file") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read: {exc.strerror}") from None


def certificates(path: Path) -> list[x509.Certificate]:
    """The PEM certificates in `path` (at least one), or ValueError saying what is wrong."""
    data = _read(path)
    try:
        found = x509.load_pem_x509_certificates(data)
    except ValueError:
        found = []
    if not found:
        raise ValueError(f"{path}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    return found


def private_key(path: Path, password: str | None) -> PrivateKeyTypes:
    """The PEM private key in `path`, if only its owner may read it and `password` opens it."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read: {exc.strerror}") from None
    data = _read(path)
    if mode & KEY_MODE_MASK:
        raise ValueError(f"{path}: mode {mode:04o} lets other users read the private key; "
                         f"run `chmod 600 {path}`")
    try:
        return serialization.load_pem_private_key(
            data, password.encode() if password is not None else None)
    except TypeError:  # encrypted without a password, or a password for a plain key
        if password is None:
            raise ValueError(f"{path}: the private key is encrypted; set "
                             "kafka.ssl_password") from None
        raise ValueError(f"{path}: the private key is not encrypted; remove "
                         "kafka.ssl_password") from None
    except ValueError:
        if password is not None and b"ENCRYPTED" in data:
            raise ValueError(f"{path}: kafka.ssl_password does not open the private "
                             "key") from None
        raise ValueError(f"{path}: holds no readable PEM private key "
                         "(-----BEGIN PRIVATE KEY-----)") from None


def check_pair(certfile: Path, keyfile: Path, password: str | None) -> None:
    """ValueError unless `keyfile` holds the private key of `certfile`'s first certificate."""
    key = private_key(keyfile, password)
    cert = certificates(certfile)[0]
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if (key.public_key().public_bytes(serialization.Encoding.DER, public)
            != cert.public_key().public_bytes(serialization.Encoding.DER, public)):
        raise ValueError(f"{keyfile}: is not the private key of the certificate in "
                         f"{certfile}")
