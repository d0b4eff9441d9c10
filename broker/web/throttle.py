"""Login throttling for the FG console: guessing a password takes a long time.

After `limit` failed logins within `window` for one user name, or from one client address,
further attempts (right or wrong) are refused until the oldest of those failures leaves
the window. A successful login clears the user name's failures. Kept in memory: one web
process serves the console, and a restart lets an attacker gain at most one more round.
Neither the user name nor the address is logged.

The memory bound must not be a way to unlock anyone. So the failures against an account
that exists are kept apart and never evicted (their number is bounded by the accounts),
and the bounded map of client addresses and unknown names evicts only entries that are
not locked, oldest first. When that map is full of locked entries a new key is not
tracked: the account's own lock still bounds the guesses against it, and refusing every
new address instead would let a flood lock every privacy officer out.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from broker.logs import get_logger

DEFAULT_LIMIT = 5
DEFAULT_WINDOW = timedelta(minutes=15)
_MAX_KEYS = 10_000  # bound the memory an attacker with many names or addresses can take
ACCOUNT_PREFIX = "account:"  # the key of an existing account's user name: never evicted


@dataclass
class LoginThrottle:
    limit: int = DEFAULT_LIMIT
    window: timedelta = DEFAULT_WINDOW
    max_keys: int = _MAX_KEYS  # of the evictable map (addresses, unknown user names)
    _accounts: dict[str, deque[datetime]] = field(default_factory=dict)
    _failures: dict[str, deque[datetime]] = field(default_factory=dict)
    _full: bool = False  # the evictable map is full of locked entries (warned once)

    def _table(self, key: str) -> dict[str, deque[datetime]]:
        return self._accounts if key.startswith(ACCOUNT_PREFIX) else self._failures

    def _recent(self, key: str, now: datetime) -> deque[datetime]:
        table = self._table(key)
        times = table.get(key, deque())
        while times and now - times[0] >= self.window:
            times.popleft()
        if not times:
            table.pop(key, None)
        return times

    def retry_after(self, keys: tuple[str, ...], now: datetime) -> timedelta | None:
        """How long until `keys` may try again; None when they may try now."""
        waits = [self.window - (now - times[0]) for key in keys
                 if len(times := self._recent(key, now)) >= self.limit]
        return max(waits) if waits else None

    def failed(self, keys: tuple[str, ...], now: datetime) -> None:
        for key in keys:
            table = self._table(key)
            if key not in table and table is self._failures and not self._make_room(now):
                if not self._full:  # once per spell, not once per attempt of a flood
                    get_logger().warning("fg login throttle full of locked entries; new "
                                         "addresses are not tracked until some expire")
                self._full = True
                continue
            table.setdefault(key, deque()).append(now)

    def _make_room(self, now: datetime) -> bool:
        """Room for one more evictable key: drop what has aged out, then the oldest
        entries that are not locked. False when every entry left is locked."""
        if len(self._failures) < self.max_keys:
            self._full = False
            return True
        for key in list(self._failures):
            self._recent(key, now)
        for key in [k for k, times in self._failures.items() if len(times) < self.limit]:
            if len(self._failures) < self.max_keys:
                break
            del self._failures[key]
        return len(self._failures) < self.max_keys

    def succeeded(self, user_key: str) -> None:
        self._table(user_key).pop(user_key, None)


def login_keys(username: str, client_host: str | None, *,
               account_exists: bool = False) -> tuple[str, ...]:
    """The throttle's keys of one attempt: its user name, and its client address. The
    name of an existing account gets a key of its own kind, which is never evicted."""
    prefix = ACCOUNT_PREFIX if account_exists else "user:"
    return (f"{prefix}{username.casefold()}", f"host:{client_host or 'unknown'}")
