"""Signals during a run: what Ctrl-C, SIGTERM and SIGHUP do, and when.

While steps run they become a flag and a wake-up of the executor's wait (the engine then
stops the steps and records the run interrupted); a second Ctrl-C stops waiting for the
grace period. While a finished run's events drain, they stop the wait (exit 130).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

from flowsh.executor import Executor


class RunSignals:
    """Turns SIGINT/SIGTERM into a flag plus a wake-up of the executor's wait."""

    def __init__(self, executor: Executor) -> None:
        self.signum: int | None = None
        self.executor = executor
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: object) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop waiting for the grace period
        self.signum = signum
        self.executor.wake()

    def __enter__(self) -> RunSignals:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: the caller handles signals
                break
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM and SIGHUP as SIGINT (KeyboardInterrupt: exit 130), in the main thread."""
    def stop(_sig: int, _frame: object) -> None:
        raise KeyboardInterrupt

    old = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            old[sig] = signal.signal(sig, stop)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
