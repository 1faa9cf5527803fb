"""How a run's events reach plugins: one `RunContext` per run, one dispatcher thread.

The engine writes each transition to the state store itself (synchronously: a failed write
stops the run), then hands the event to the run's `Dispatcher`, which calls the pluggy hook
on its own thread, in order. So nothing a plugin does — a notifier waiting on a slow
server, a Pushgateway that does not answer — can hold the run loop: timeouts, retries and
signals keep their times. At the end of the run the dispatcher is drained (each notifier
has its own timeout); what is still busy after `DRAIN_LIMIT` is named on stderr and left.
"""

from __future__ import annotations

import copy
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowsh import plugins
from flowsh.notify import effective_notify
from flowsh.signals import interruptible

if TYPE_CHECKING:
    from flowsh.model import Notify, Workflow
    from flowsh.secrets import Masker
    from flowsh.state import RunRecord

# Longer than any notifier's own timeout times its retries: past it, something is stuck.
DRAIN_LIMIT = 120.0


@dataclass
class RunContext:
    """What every event hook of one run receives as ``ctx``.

    ``masker`` is the run's own (the one the engine masks logs with; it learns secret
    outputs as steps produce them). ``notify`` is the workflow's notify config over the
    user's, read once. ``options`` carries what the command line asked of plugins
    (``metrics_push``). ``slot(name)`` is a plugin's own per-run state.
    """

    run: RunRecord
    workflow: Workflow
    masker: Masker
    run_dir: Path
    options: dict[str, Any] = field(default_factory=dict)
    _notify: Notify | None = field(default=None, repr=False)
    _slots: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    @property
    def notify(self) -> Notify:
        if self._notify is None:
            self._notify = effective_notify(self.workflow)
        return self._notify

    def slot(self, plugin: str) -> dict[str, Any]:
        return self._slots.setdefault(plugin, {})


_STOP = object()


class Dispatcher:
    """Calls run-event hooks on one thread, in the order the engine emits them."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._busy: str | None = None  # the hook being called, named if the drain times out
        self._thread = threading.Thread(target=self._work, name="flowsh-events", daemon=True)
        self._thread.start()

    def emit(self, event: str, **kwargs: Any) -> None:
        step = kwargs.get("step")
        if step is not None:
            # The engine goes on changing the record; the hook sees it as it was.
            kwargs["step"] = copy.copy(step)
        self._queue.put((event, kwargs))

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            event, kwargs = item
            self._busy = event
            plugins.emit(event, ctx=self.ctx, run=self.ctx.run, workflow=self.ctx.workflow,
                         **kwargs)
            self._busy = None

    def close(self, limit: float = DRAIN_LIMIT) -> None:
        """Wait for every event emitted so far to be handled (at most ``limit`` seconds).

        SIGTERM or SIGINT meanwhile stops the wait (exit 130, TIME-2): the run's record is
        final already; what the plugins had not done is said on stderr."""
        self._queue.put(_STOP)
        start = time.monotonic()
        with interruptible():
            try:
                self._thread.join(min(limit, 2.0))
                if self._thread.is_alive():  # a person at a terminal sees why it waits
                    plugins.warn(f"waiting for plugins to finish {self._busy or 'the run end'}"
                                 " (alerts going out; Ctrl-C to stop waiting)")
                    self._thread.join(max(0.0, limit - 2.0))
            except KeyboardInterrupt:
                plugins.warn(f"interrupted while plugins handled {self._busy or 'the run end'}"
                             " (alerts may not have gone out)")
                raise
        if self._thread.is_alive():
            plugins.warn(f"a plugin was still handling {self._busy or 'an event'} "
                         f"{time.monotonic() - start:.0f}s after the run ended; not waiting")
