"""Secret keys in the data directory: created on first use with mode 0600, never logged.

Pseudonymisation uses one HMAC key per purpose, so the same value gets unrelated
pseudonyms in different purposes. The data subject key (for the audit log's subject
pseudonyms) and the commitment key (for keyed commitments to delivered bytes) are separate.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

from broker.errors import ConfigError

KEY_BYTES = 32
_SAFE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


class KeyStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._cache: dict[str, bytes] = {}

    def secret(self, name: str) -> bytes:
        """The named 32-byte secret, created with mode 0600 the first time it is asked for."""
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        if not _SAFE.match(name):
            raise ValueError(f"unsafe key name {name!r}")
        path = self.directory / f"{name}.key"
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            value = self._read(path)
        else:
            value = secrets.token_bytes(KEY_BYTES)
            with os.fdopen(fd, "wb") as handle:
                handle.write(value)
        self._cache[name] = value
        return value

    @staticmethod
    def _read(path: Path) -> bytes:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ConfigError(f"{path}: key file has mode {mode:04o}; it must be 0600 "
                              f"(chmod 600 {path})")
        value = path.read_bytes()
        if len(value) != KEY_BYTES:
            raise ConfigError(f"{path}: key file holds {len(value)} bytes, expected {KEY_BYTES}")
        return value

    def pseudonym_key(self, purpose: str, version: int = 1) -> bytes:
        """The purpose's pseudonymisation key; rotation adds versions, old ones stay for replay."""
        suffix = "" if version == 1 else f".v{version}"
        return self.secret(f"pseudonym.{purpose}{suffix}")

    def subject_key(self) -> bytes:
        return self.secret("subject")

    def commitment_key(self) -> bytes:
        return self.secret("commitment")

    @property
    def signing_key_path(self) -> Path:
        return self.directory / "checkpoint-signing.pem"


def keyed_pseudonym(key: bytes, value: str) -> str:
    """HMAC-SHA256 of the value, 128 bits in hex: stable per key, unlinkable across keys."""
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def commitment(key: bytes, data: bytes) -> str:
    """A keyed commitment to bytes: proves what was sent without storing it."""
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def committer(key: bytes) -> Callable[[bytes], str]:
    """`commitment` under one key, the keyed HMAC set up once (each call copies it)."""
    base = hmac.new(key, digestmod=hashlib.sha256)

    def commit(data: bytes) -> str:
        mac = base.copy()
        mac.update(data)
        return mac.hexdigest()

    return commit
