"""The key-encryption key (KEK) that wraps every data key.

It lives outside the key store: a file with mode 0600 here; production puts a KMS behind
the same small interface (wrap/unwrap). Losing it makes every sealed field unreadable,
which is why it is backed up separately from the data directory.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.keys import KeyStore

NONCE = 12


class KeyEncryptionKey(Protocol):
    def wrap(self, data_key: bytes, key_id: str) -> bytes: ...

    def unwrap(self, wrapped: bytes, key_id: str) -> bytes: ...


class FileKek:
    """AES-256-GCM with a 32-byte key from a 0600 file; the key id is associated data."""

    def __init__(self, keys: KeyStore) -> None:
        self._aead = AESGCM(keys.secret("kek"))

    def wrap(self, data_key: bytes, key_id: str) -> bytes:
        nonce = secrets.token_bytes(NONCE)
        return nonce + self._aead.encrypt(nonce, data_key, key_id.encode())

    def unwrap(self, wrapped: bytes, key_id: str) -> bytes:
        return self._aead.decrypt(wrapped[:NONCE], wrapped[NONCE:], key_id.encode())


def kek_path(keys_dir: Path) -> Path:
    return keys_dir / "kek.key"
