"""The FG console's login throttle (broker/web/throttle.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from broker.web.throttle import DEFAULT_WINDOW, LoginThrottle, login_keys

T0 = datetime(2026, 5, 12, 9, 0, tzinfo=UTC)


def test_the_limit_counts_failures_in_the_window_only() -> None:
    throttle = LoginThrottle(limit=3, window=timedelta(minutes=10))
    keys = login_keys("fg", "10.0.0.1")
    for minute in (0, 4, 8):
        assert throttle.retry_after(keys, T0 + timedelta(minutes=minute)) is None
        throttle.failed(keys, T0 + timedelta(minutes=minute))
    assert throttle.retry_after(keys, T0 + timedelta(minutes=9)) == timedelta(minutes=1)
    # at minute 10 the first failure is out: two in the window, one more try allowed
    assert throttle.retry_after(keys, T0 + timedelta(minutes=10)) is None


def test_an_address_that_tries_many_names_is_throttled_too() -> None:
    throttle = LoginThrottle(limit=3)
    for name in ("a", "b", "c"):
        throttle.failed(login_keys(name, "10.0.0.9"), T0)
    assert throttle.retry_after(login_keys("d", "10.0.0.9"), T0) is not None
    assert throttle.retry_after(login_keys("d", "10.0.0.8"), T0) is None


def test_success_clears_the_user_name_but_not_the_address() -> None:
    throttle = LoginThrottle(limit=2)
    keys = login_keys("FG", "10.0.0.1")
    throttle.failed(keys, T0)
    throttle.succeeded(keys[0])
    throttle.failed(login_keys("fg", "10.0.0.2"), T0)  # user names compare case-blind
    assert throttle.retry_after(login_keys("fg", "10.0.0.3"), T0) is None
    throttle.failed(login_keys("fg", "10.0.0.3"), T0)
    assert throttle.retry_after(login_keys("fg", "10.0.0.4"), T0) is not None


@given(st.lists(st.integers(min_value=0, max_value=3600), max_size=40),
       st.integers(min_value=1, max_value=6))
def test_refused_exactly_when_limit_failures_lie_in_the_window(offsets: list[int],
                                                              limit: int) -> None:
    throttle = LoginThrottle(limit=limit, window=timedelta(seconds=600))
    keys = login_keys("fg", "h")
    times = sorted(T0 + timedelta(seconds=s) for s in offsets)
    for at in times:
        throttle.failed(keys, at)
    now = (times[-1] if times else T0) + timedelta(seconds=1)
    recent = [t for t in times if now - t < timedelta(seconds=600)]
    assert (throttle.retry_after(keys, now) is not None) == (len(recent) >= limit)


# -- the memory bound cannot unlock anyone (issue 15, item 5) ---------------------------------

def test_a_flood_of_new_addresses_does_not_unlock_a_locked_user() -> None:
    """5,001 failures from distinct addresses (10,002 keys, past the 10,000 bound) used to
    evict the oldest key, the locked user's, so the next guess was checked again."""
    throttle = LoginThrottle()
    for attempt in range(5):
        throttle.failed(login_keys("fg", f"10.0.0.{attempt}"), T0)
    assert throttle.retry_after(login_keys("fg", "10.9.9.9"), T0) is not None
    for n in range(5_001):
        throttle.failed(login_keys(f"guess{n}", f"2001:db8::{n:x}"), T0 + timedelta(seconds=1))
    assert throttle.retry_after(login_keys("fg", "10.9.9.9"),
                                T0 + timedelta(seconds=2)) is not None


def test_an_account_stays_locked_when_the_map_is_full_of_locked_addresses() -> None:
    throttle = LoginThrottle(limit=2, max_keys=4)
    account = login_keys("fg", "10.0.0.1", account_exists=True)
    throttle.failed(account, T0)
    throttle.failed(account, T0)
    for n in range(10):  # lock address after address: the evictable map fills with locks
        for _ in range(2):
            throttle.failed(login_keys(f"x{n}", f"10.1.0.{n}"), T0)
    assert throttle.retry_after(login_keys("fg", "10.2.0.1", account_exists=True),
                                T0 + timedelta(minutes=1)) is not None
    assert len(throttle._failures) <= 4  # the bound still holds
    # the window ends the lock as always
    assert throttle.retry_after(login_keys("fg", "10.2.0.1", account_exists=True),
                                T0 + DEFAULT_WINDOW) is None


attempts = st.lists(st.tuples(st.sampled_from(["victim", "fg", "other"]),  # who is tried
                              st.integers(min_value=0, max_value=30),  # from which address
                              st.integers(min_value=0, max_value=400)),  # seconds later
                    max_size=120)


@given(attempts, st.integers(min_value=1, max_value=4), st.integers(min_value=1, max_value=6))
def test_a_user_with_limit_failures_in_the_window_stays_locked(
        tries: list[tuple[str, int, int]], limit: int, max_keys: int) -> None:
    """Any sequence of attempts from any addresses, handled as the console does (refused
    unchecked while locked, else a failure), under any eviction pressure: the account
    `victim` is locked exactly while `limit` of its failures lie in the window, and no
    lock (of an address or an unknown name either) ends before the time it announced."""
    window = timedelta(seconds=600)
    throttle = LoginThrottle(limit=limit, window=window, max_keys=max_keys)
    now, victim_failures = T0, list[datetime]()
    announced: dict[str, datetime] = {}  # key -> the end of its lock, as retry_after said
    for who, address, later in tries:
        now += timedelta(seconds=later)
        name = who if who != "other" else f"other{address}"
        keys = login_keys(name, f"10.0.0.{address}", account_exists=who == "victim")
        if throttle.retry_after(keys, now) is None:
            throttle.failed(keys, now)
            if who == "victim":
                victim_failures.append(now)
        for key in {*keys, *announced}:
            wait = throttle.retry_after((key,), now)
            if key in announced and now < announced[key]:
                assert wait is not None, f"{key} unlocked before {announced[key]}"
            if wait is not None:
                announced[key] = now + wait
        in_window = sum(1 for t in victim_failures if now - t < window)
        victim = login_keys("victim", "192.0.2.1", account_exists=True)[:1]
        assert (throttle.retry_after(victim, now) is not None) == (in_window >= limit)
