"""Login throttling for the FG console: guessing a password takes a long time.

After `limit` failed logins within `window` for one user name, or from one client address,
further attempts (right or wrong) are refused until the oldest of those failures leaves
the window. A successful login clears the user name's failures. Kept in memory: one web
process serves the console, and a restart lets an attacker gain at most one more round.
Neither the user name nor the address is logged.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

DEFAULT_LIMIT = 5
DEFAULT_WINDOW = timedelta(minutes=15)
_MAX_KEYS = 10_000  # bound the memory an attacker with many names or addresses can take


@dataclass
class LoginThrottle:
    limit: int = DEFAULT_LIMIT
    window: timedelta = DEFAULT_WINDOW
    _failures: dict[str, deque[datetime]] = field(default_factory=dict)

    def _recent(self, key: str, now: datetime) -> deque[datetime]:
        times = self._failures.get(key, deque())
        while times and now - times[0] >= self.window:
            times.popleft()
        if not times:
            self._failures.pop(key, None)
        return times

    def retry_after(self, keys: tuple[str, ...], now: datetime) -> timedelta | None:
        """How long until `keys` may try again; None when they may try now."""
        waits = [self.window - (now - times[0]) for key in keys
                 if len(times := self._recent(key, now)) >= self.limit]
        return max(waits) if waits else None

    def failed(self, keys: tuple[str, ...], now: datetime) -> None:
        if len(self._failures) >= _MAX_KEYS:  # drop what has aged out, then the oldest
            for key in list(self._failures):
                self._recent(key, now)
            while len(self._failures) >= _MAX_KEYS:
                self._failures.pop(next(iter(self._failures)))
        for key in keys:
            self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, user_key: str) -> None:
        self._failures.pop(user_key, None)


def login_keys(username: str, client_host: str | None) -> tuple[str, ...]:
    """The throttle's keys of one attempt: its user name, and its client address."""
    return (f"user:{username.casefold()}", f"host:{client_host or 'unknown'}")
