"""The cyclic garbage collector paused while a batch of the pipeline runs.

A batch allocates hundreds of thousands of short-lived dicts, lists and tuples (decoded
events, views, drafts, rows) that reference counting frees on its own; the cyclic
collector still makes a generation-0 pass every 700 net allocations and, every hundred of
those, a pass over every long-lived object (schemas, plans, caches). Paused for the batch,
a cycle the batch leaves behind is collected by the first pass after it. Measured in
bench/pipeline_bench.py, interleaved in one process (issue 14): the durable pipeline
719 -> 647 µs/event CPU, the in-process hot path 231 -> 193 (medians of 5, load 6-7).

Process-wide, as the collector is, and reentrant: a depth count under a lock, so nested
batches (ingest -> decide -> seal) and concurrent ones (the web console's threads) resume
it when the last one ends, and a collector that was disabled before stays disabled.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_lock = threading.Lock()
_depth = 0
_resume = False  # whether the collector was enabled when the outermost pause began


@contextmanager
def paused() -> Iterator[None]:
    global _depth, _resume  # noqa: PLW0603 - one collector per process, one count
    with _lock:
        if _depth == 0:
            _resume = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _resume:
                gc.enable()


def during(f: Callable[P, T]) -> Callable[P, T]:
    """`f` with the collector paused while it runs (a batch step)."""
    @wraps(f)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        with paused():
            return f(*args, **kwargs)

    return run
