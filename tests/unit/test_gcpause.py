"""The cyclic collector is paused for a batch and resumed after the last one (issue 14)."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from broker.gcpause import during, paused


@pytest.fixture(autouse=True)
def _collector_enabled() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_paused_while_a_batch_runs_and_resumed_after_it_even_when_it_raises() -> None:
    seen: list[bool] = []

    @during
    def batch(fail: bool) -> int:
        seen.append(gc.isenabled())
        if fail:
            raise ValueError("poison")
        return 3

    assert batch(False) == 3
    with pytest.raises(ValueError, match="poison"):
        batch(True)
    assert seen == [False, False]
    assert gc.isenabled()


def test_nested_batches_resume_it_only_when_the_outermost_ends() -> None:
    with paused():
        with paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_collector_disabled_before_stays_disabled() -> None:
    gc.disable()
    with paused():
        pass
    assert not gc.isenabled()


def test_concurrent_batches_resume_it_when_the_last_one_ends() -> None:
    inside, release = threading.Barrier(3), threading.Event()

    def batch() -> None:
        with paused():
            inside.wait()
            release.wait()

    threads = [threading.Thread(target=batch) for _ in range(2)]
    for t in threads:
        t.start()
    inside.wait()
    with paused():
        pass  # a third batch ending while two still run must not resume the collector
    assert not gc.isenabled()
    release.set()
    for t in threads:
        t.join()
    assert gc.isenabled()
