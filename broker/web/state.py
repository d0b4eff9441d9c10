"""The web's own state, in `web.db` in the data directory, beside (not inside) the event log.

It works the same on both backends and holds no personal data about data subjects:
  api_token  SHA-256 of each recipient API token (the token itself is shown once, never kept)
  party_token SHA-256 of each covenant party's read token (the party read API), the same way
  fg_user    privacy-officer accounts: scrypt password hashes with their salt and cost
  fg_session live console sessions: SHA-256 of the random id the cookie holds, the user and
             the start; a logout or a new password deletes them, so a copied cookie dies
  ack        the offset each recipient acknowledged per purpose (the last one wins)
Tokens and accounts are revoked by a timestamp, never deleted, so the history stays readable.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from broker.errors import StorageError
from broker.keys import private_db

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_token (
    token_hash TEXT PRIMARY KEY,
    token_id TEXT NOT NULL UNIQUE,
    recipient TEXT NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    created_ms INTEGER NOT NULL,
    revoked_ms INTEGER
);
CREATE TABLE IF NOT EXISTS party_token (
    token_hash TEXT PRIMARY KEY,
    token_id TEXT NOT NULL UNIQUE,
    party TEXT NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    created_ms INTEGER NOT NULL,
    revoked_ms INTEGER
);
CREATE TABLE IF NOT EXISTS fg_user (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    disabled_ms INTEGER
);
CREATE TABLE IF NOT EXISTS fg_session (
    id_hash TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    started_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS fg_session_user ON fg_session (user);
CREATE TABLE IF NOT EXISTS ack (
    recipient TEXT NOT NULL,
    purpose TEXT NOT NULL,
    acked_offset INTEGER NOT NULL,
    acked_ms INTEGER NOT NULL,
    PRIMARY KEY (recipient, purpose)
);
"""

FILE_NAME = "web.db"


@dataclass(frozen=True)
class TokenInfo:
    token_id: str
    recipient: str
    label: str
    created_ms: int
    revoked_ms: int | None


@dataclass(frozen=True)
class PartyTokenInfo:
    token_id: str
    party: str
    label: str
    created_ms: int
    revoked_ms: int | None


class WebState:
    """Short-lived connections per call: safe from any thread, and from the CLI meanwhile."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / FILE_NAME
        private_db(self.path)  # accounts and sessions: owner only, 0600 from the start
        with self._db() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        try:
            with closing(sqlite3.connect(self.path, timeout=30.0)) as db, db:
                yield db
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: {exc}") from exc

    # -- recipient API tokens -----------------------------------------------------------------
    def add_token(self, token_hash: str, token_id: str, recipient: str, label: str,
                  now_ms: int) -> None:
        with self._db() as db:
            db.execute("INSERT INTO api_token (token_hash, token_id, recipient, label, "
                       "created_ms) VALUES (?, ?, ?, ?, ?)",
                       (token_hash, token_id, recipient, label, now_ms))

    def token_recipient(self, token_hash: str) -> str | None:
        with self._db() as db:
            row = db.execute("SELECT recipient FROM api_token WHERE token_hash = ? AND "
                             "revoked_ms IS NULL", (token_hash,)).fetchone()
        return str(row[0]) if row else None

    def token_identity(self, token_hash: str) -> tuple[str, str] | None:
        """(recipient, token id) of a live token: the id names it in access entries."""
        with self._db() as db:
            row = db.execute("SELECT recipient, token_id FROM api_token WHERE token_hash = ? "
                             "AND revoked_ms IS NULL", (token_hash,)).fetchone()
        return (str(row[0]), str(row[1])) if row else None

    def tokens(self) -> list[TokenInfo]:
        with self._db() as db:
            rows = db.execute("SELECT token_id, recipient, label, created_ms, revoked_ms "
                              "FROM api_token ORDER BY created_ms, token_id").fetchall()
        return [TokenInfo(*row) for row in rows]

    def revoke_token(self, token_id: str, now_ms: int) -> bool:
        with self._db() as db:
            done = db.execute("UPDATE api_token SET revoked_ms = ? WHERE token_id = ? AND "
                              "revoked_ms IS NULL", (now_ms, token_id))
        return done.rowcount == 1

    # -- covenant party read tokens (a table of their own: a recipient token reads no
    # party's disclosures, and a party token no stream) ------------------------------------
    def add_party_token(self, token_hash: str, token_id: str, party: str, label: str,
                        now_ms: int) -> None:
        with self._db() as db:
            db.execute("INSERT INTO party_token (token_hash, token_id, party, label, "
                       "created_ms) VALUES (?, ?, ?, ?, ?)",
                       (token_hash, token_id, party, label, now_ms))

    def token_party(self, token_hash: str) -> tuple[str, str] | None:
        """(party, token id) of an active party token."""
        with self._db() as db:
            row = db.execute("SELECT party, token_id FROM party_token WHERE token_hash = ? "
                             "AND revoked_ms IS NULL", (token_hash,)).fetchone()
        return (str(row[0]), str(row[1])) if row else None

    def party_tokens(self) -> list[PartyTokenInfo]:
        with self._db() as db:
            rows = db.execute("SELECT token_id, party, label, created_ms, revoked_ms "
                              "FROM party_token ORDER BY created_ms, token_id").fetchall()
        return [PartyTokenInfo(*row) for row in rows]

    def revoke_party_token(self, token_id: str, now_ms: int) -> bool:
        with self._db() as db:
            done = db.execute("UPDATE party_token SET revoked_ms = ? WHERE token_id = ? AND "
                              "revoked_ms IS NULL", (now_ms, token_id))
        return done.rowcount == 1

    # -- privacy-officer accounts -------------------------------------------------------------
    def set_fg_user(self, name: str, password_hash: str, now_ms: int) -> bool:
        """Create the account or replace its password; True when it was new."""
        with self._db() as db:
            existed = db.execute("SELECT 1 FROM fg_user WHERE name = ?", (name,)).fetchone()
            db.execute("INSERT INTO fg_user (name, password_hash, created_ms) VALUES (?, ?, ?) "
                       "ON CONFLICT (name) DO UPDATE SET password_hash = excluded.password_hash,"
                       " disabled_ms = NULL", (name, password_hash, now_ms))
            # a new password ends the account's sessions (someone may have had the old one)
            db.execute("DELETE FROM fg_session WHERE user = ?", (name,))
        return existed is None

    def fg_password_hash(self, name: str) -> str | None:
        with self._db() as db:
            row = db.execute("SELECT password_hash FROM fg_user WHERE name = ? AND "
                             "disabled_ms IS NULL", (name,)).fetchone()
        return str(row[0]) if row else None

    # -- console sessions (server side: logging out ends a session for good) -------------
    def start_session(self, id_hash: str, user: str, now_ms: int) -> None:
        with self._db() as db:
            db.execute("INSERT INTO fg_session (id_hash, user, started_ms) VALUES (?, ?, ?)",
                       (id_hash, user, now_ms))

    def session_user(self, id_hash: str, not_before_ms: int) -> str | None:
        """The live session's user: started at or after `not_before_ms`, account enabled."""
        with self._db() as db:
            row = db.execute("SELECT s.user FROM fg_session s JOIN fg_user u ON u.name = "
                             "s.user WHERE s.id_hash = ? AND s.started_ms >= ? AND "
                             "u.disabled_ms IS NULL", (id_hash, not_before_ms)).fetchone()
        return str(row[0]) if row else None

    def end_session(self, id_hash: str, not_before_ms: int) -> None:
        """End this session, and forget every session that has expired anyway."""
        with self._db() as db:
            db.execute("DELETE FROM fg_session WHERE id_hash = ? OR started_ms < ?",
                       (id_hash, not_before_ms))

    # -- acknowledged offsets -----------------------------------------------------------------
    def ack(self, recipient: str, purpose: str, offset: int, now_ms: int) -> int | None:
        """Store the acknowledged offset; returns the one it replaces (None: the first)."""
        with self._db() as db:
            row = db.execute("SELECT acked_offset FROM ack WHERE recipient = ? AND purpose = ?",
                             (recipient, purpose)).fetchone()
            db.execute("INSERT INTO ack (recipient, purpose, acked_offset, acked_ms) VALUES "
                       "(?, ?, ?, ?) ON CONFLICT (recipient, purpose) DO UPDATE SET "
                       "acked_offset = excluded.acked_offset, acked_ms = excluded.acked_ms",
                       (recipient, purpose, offset, now_ms))
        return int(row[0]) if row else None

    def acked(self, recipient: str) -> dict[str, int]:
        with self._db() as db:
            rows = db.execute("SELECT purpose, acked_offset FROM ack WHERE recipient = ?",
                              (recipient,)).fetchall()
        return {str(p): int(o) for p, o in rows}
