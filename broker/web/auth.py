"""Credentials, kept only as hashes: recipient API tokens, covenant party read tokens and
privacy-officer passwords.

API tokens are 256 random bits, so a plain SHA-256 of the token is as strong as any slow
hash and lets each request be checked with one index lookup (a slow hash per request would
invite a denial of service). FG passwords are chosen by people: they get scrypt with a salt
of their own, and a failed login costs the same time whether or not the account exists.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from fastapi import HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials

from broker.clock import to_millis
from broker.web.state import WebState

TOKEN_PREFIX = "cbt_"  # noqa: S105 - a marker that tells a token apart, not a secret
PARTY_TOKEN_PREFIX = "cbp_"  # noqa: S105 - the same, for a covenant party's read token
MIN_PASSWORD_LENGTH = 12
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**15, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024
SESSION_ID = "sid"  # the cookie holds a random id; the server holds (its hash, the user)
SESSION_CSRF = "csrf"


# -- API tokens ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class NewToken:
    token: str  # shown once
    token_id: str  # a public handle for listing and revoking; not enough to authenticate


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(state: WebState, recipient: str, label: str, now_ms: int) -> NewToken:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    digest = hash_token(token)
    token_id = digest[:12]
    state.add_token(digest, token_id, recipient, label, now_ms)
    return NewToken(token, token_id)


def create_party_token(state: WebState, party: str, label: str, now_ms: int) -> NewToken:
    """A covenant party's read token (the party read API): made and kept as a recipient
    token is, in a table of its own."""
    token = PARTY_TOKEN_PREFIX + secrets.token_urlsafe(32)
    digest = hash_token(token)
    token_id = digest[:12]
    state.add_party_token(digest, token_id, party, label, now_ms)
    return NewToken(token, token_id)


def _bearer_hash(credentials: HTTPAuthorizationCredentials | None) -> str | None:
    """The hash a bearer token is stored under; None for no token or one not of ours."""
    if credentials is None or not credentials.credentials:
        return None
    if len(credentials.credentials) > 256:  # not one of ours; do not hash megabytes
        return None
    return hash_token(credentials.credentials)


def token_party(state: WebState, credentials: HTTPAuthorizationCredentials | None
                ) -> tuple[str, str] | None:
    """(party, token id) a bearer token belongs to; None for none, unknown or revoked."""
    found = _bearer_hash(credentials)
    return state.token_party(found) if found else None


def token_identity(state: WebState, credentials: HTTPAuthorizationCredentials | None
                   ) -> tuple[str, str] | None:
    """(recipient, token id) of a bearer token; None for none, unknown or revoked."""
    found = _bearer_hash(credentials)
    return state.token_identity(found) if found else None


# -- FG passwords -------------------------------------------------------------------------------
def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                          maxmem=_SCRYPT_MAXMEM, dklen=32)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    """`scrypt$N$r$p$salt$hash`, salt and hash in base64: the cost travels with the hash."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"a password has at least {MIN_PASSWORD_LENGTH} characters")
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


_DUMMY_HASH = (f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(bytes(16))}"
               f"${_b64(bytes(32))}")


def check_password(stored: str | None, password: str) -> bool:
    """Constant work for a missing account too, so timing does not tell which names exist."""
    try:
        kind, n, r, p, salt, digest = (stored or _DUMMY_HASH).split("$")
        expected = base64.b64decode(digest)
        got = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
    except ValueError:  # a damaged row: refuse, never crash the login page
        return False
    return stored is not None and kind == "scrypt" and hmac.compare_digest(expected, got)


# -- the console session ------------------------------------------------------------------------
def csrf_token(request: Request) -> str:
    """The session's CSRF token (made on first use); every console form posts it back."""
    token = request.session.get(SESSION_CSRF)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session[SESSION_CSRF] = token
    return token


def csrf_ok(request: Request, posted: str | None) -> bool:
    expected = request.session.get(SESSION_CSRF)
    return isinstance(expected, str) and isinstance(posted, str) and \
        hmac.compare_digest(expected.encode(), posted.encode())


def _session_clock(request: Request) -> tuple[WebState, int, int]:
    """The app's web state, now, and the oldest start a live session may have (in ms)."""
    app = request.app.state
    now_ms = to_millis(app.clock())
    return app.web_state, now_ms, now_ms - int(app.options.session_hours * 3_600_000)


def session_user(request: Request) -> str | None:
    """The FG user of a live server-side session: one that was started by a login, not
    ended by a logout or a new password, within the session lifetime, account enabled.
    A copied cookie is worth nothing once its session has ended."""
    sid = request.session.get(SESSION_ID)
    if not isinstance(sid, str):
        return None
    state, _, oldest = _session_clock(request)
    return state.session_user(hash_token(sid), oldest)


def start_session(request: Request, user: str) -> None:
    """A fresh session on login: a new id and CSRF token, nothing carried over (session
    fixation)."""
    request.session.clear()
    state, now_ms, _ = _session_clock(request)
    sid = secrets.token_urlsafe(32)
    state.start_session(hash_token(sid), user, now_ms)
    request.session[SESSION_ID] = sid
    request.session[SESSION_CSRF] = secrets.token_urlsafe(32)


def end_session(request: Request) -> None:
    sid = request.session.get(SESSION_ID)
    state, _, oldest = _session_clock(request)
    state.end_session(hash_token(sid) if isinstance(sid, str) else "", oldest)
    request.session.clear()


def unauthorized(credentials: HTTPAuthorizationCredentials | None, missing: str,
                 unknown: str) -> HTTPException:
    """The 401 of a bearer route: `missing` without a token, `unknown` for one not live."""
    return HTTPException(401, missing if credentials is None else unknown,
                         headers={"WWW-Authenticate": "Bearer"})
