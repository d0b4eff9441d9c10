"""One pipeline writer at a time on an embedded data directory, across its processes.

Each SQLite write is a transaction of its own, but a pipeline step reads before it writes:
ingest asks which event ids are stored already, decide reads from the decider's position,
an expiry sweep reads which records are due, an erasure reads what was released. Two
`ingest` commands on one data directory at once stored the same event twice (the second
refused by the unique index, exit 2) or decided the same offsets twice (the second refused
by the position check). A step runs under this lock: an exclusive `flock` on
`pipeline.lock` in the data directory, re-entrant in its process (ingest decides inside
its own hold), and shared by the threads of a process through one re-entrant lock.

Kafka has no such lock: its decisions are fenced by the transactional producer instead.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from broker.errors import TransientBackendError
from broker.logs import get_logger

LOCK_NAME = "pipeline.lock"


class WriterLock:
    def __init__(self, data_dir: Path, wait_s: float = 600.0,
                 on_acquire: Callable[[], None] | None = None) -> None:
        self.path = data_dir / LOCK_NAME
        self.wait_s = wait_s
        self.on_acquire = on_acquire  # run each time this process takes the lock
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Run the block as the data directory's only pipeline writer; waits for another
        process's step up to `wait_s`, then refuses with that process's id."""
        if not self._thread_lock.acquire(timeout=self.wait_s):
            raise TransientBackendError(
                f"{self.path}: another thread of this process held the pipeline for "
                f"{self.wait_s:.0f} s; try again")
        try:
            if self._depth == 0:
                self._fd = self._acquire()
                if self.on_acquire is not None:
                    try:
                        self.on_acquire()
                    except BaseException:
                        os.close(self._fd)
                        self._fd = None
                        raise
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._fd is not None:
                    os.close(self._fd)  # releases the flock
                    self._fd = None
        finally:
            self._thread_lock.release()

    def _acquire(self) -> int:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            deadline = time.monotonic() + self.wait_s
            told = False
            pause = 0.005
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise TransientBackendError(
                            f"{self.path}: process {self._holder()} has held this data "
                            f"directory's pipeline for over {self.wait_s:.0f} s (an ingest, "
                            "decide, sweep or erasure); try again when it has finished"
                        ) from None
                    if not told and pause >= 0.5:
                        get_logger().info("waiting for another process's pipeline step",
                                          lock=str(self.path), holder=self._holder())
                        told = True
                time.sleep(pause)
                pause = min(pause * 2, 0.5)
            os.ftruncate(fd, 0)  # the holder's pid, for the message of whoever waits
            os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _holder(self) -> str:
        try:
            text = self.path.read_bytes()[:20].decode("ascii", "replace").strip()
        except OSError:
            return "unknown"
        return text if text.isdigit() else "unknown"
