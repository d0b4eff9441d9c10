"""The one thread that owns the Broker.

The embedded backend's SQLite handles belong to the thread that opened them, and the Broker
is not written for concurrent use, so every call goes through one worker thread, in order.
Request handlers await `call`; the event loop stays free while a call runs (a long-poll
waits between calls, never inside one).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from broker.app.service import Broker
from broker.config import Settings

T = TypeVar("T")


class BrokerWorker:
    def __init__(self, settings: Settings,
                 factory: Callable[[Settings], Broker] = Broker) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="broker")
        self._broker: Broker | None = None
        self._broker = self._executor.submit(factory, settings).result()  # errors show now

    @property
    def broker(self) -> Broker:
        if self._broker is None:
            raise RuntimeError("the broker worker is closed")
        return self._broker

    def run(self, fn: Callable[[Broker], T]) -> T:
        """Run fn(broker) on the worker thread and wait (for the CLI and tests)."""
        return self._executor.submit(lambda: fn(self.broker)).result()

    async def call(self, fn: Callable[[Broker], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(self.broker))

    def close(self) -> None:
        if self._broker is None:
            return
        broker, self._broker = self._broker, None
        self._executor.submit(broker.close).result()  # signs what this process appended
        self._executor.shutdown(wait=True)
