"""The FG console's login throttle (broker/web/throttle.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from broker.web.throttle import LoginThrottle, login_keys

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
