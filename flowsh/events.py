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
# One hook call: notifications go out on threads of their own (the alerts plugin), so a
# hook that takes this long is hung, not busy.
HOOK_LIMIT = 10.0
# How long the dispatcher lets events gather once it has handled what was there: waking
# its thread for each event cost more than the built-in hooks themselves (a step's start
# and end a few milliseconds apart, each a wake-up and two hand-overs of the GIL). Events
# reach plugins at most this late; the run's end does not wait for it.
LINGER = 0.02


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
    """Calls run-event hooks on one thread, in the order the engine emits them.

    A hook call that takes longer than HOOK_LIMIT is stuck: its plugin is named, left out
    of the run's later events, and a fresh thread goes on with them, so one hung plugin
    never costs the others (a run_failed alert) their events.
    """

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._busy: str | None = None  # the hook being called, named if the drain times out
        self._since: float | None = None  # when that call started
        self._stuck: frozenset[str] = frozenset()
        self._closing = threading.Event()
        self._thread = self._worker()

    def _worker(self) -> threading.Thread:
        thread = threading.Thread(target=self._work, name="flowsh-events", daemon=True)
        self._thread = thread
        thread.start()
        return thread

    def emit(self, event: str, **kwargs: Any) -> None:
        step = kwargs.get("step")
        if step is not None:
            # The engine goes on changing the record; the hook sees it as it was.
            kwargs["step"] = copy.copy(step)
        self._check_stuck()
        self._queue.put((event, kwargs))

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            event, kwargs = item
            with self._lock:
                self._busy, self._since = event, time.monotonic()
            plugins.emit(event, without=self._stuck, ctx=self.ctx, run=self.ctx.run,
                         workflow=self.ctx.workflow, **kwargs)
            with self._lock:
                if self._thread is not me:  # given up on while stuck: the new one goes on
                    return
                self._busy = self._since = None
            if self._queue.empty():
                self._closing.wait(LINGER)

    def _check_stuck(self) -> None:
        with self._lock:
            if self._since is None or time.monotonic() - self._since < HOOK_LIMIT:
                return
            who = plugins.running_in.get(self._thread.ident or 0)
            plugins.warn(f"plugin {who or '(a wrapper)'} has been handling {self._busy} for "
                         f"over {HOOK_LIMIT:.0f}s; the run's later events go on without it")
            if who is not None:
                self._stuck |= {who}
            self._busy = self._since = None
            self._worker()

    def close(self, limit: float = DRAIN_LIMIT) -> None:
        """Wait for every event emitted so far to be handled (at most ``limit`` seconds).

        SIGTERM or SIGINT meanwhile stops the wait (exit 130, TIME-2): the run's record is
        final already; what the plugins had not done is said on stderr."""
        self._queue.put(_STOP)
        self._closing.set()
        start = time.monotonic()
        said = False
        with interruptible():
            try:
                while self._thread.is_alive() and time.monotonic() - start < limit:
                    self._thread.join(min(0.5, max(0.0, limit - (time.monotonic() - start))))
                    self._check_stuck()
                    if not said and self._thread.is_alive() and \
                            time.monotonic() - start >= min(limit, 2.0):
                        said = True  # a person at a terminal sees why it waits
                        plugins.warn(f"waiting for plugins to finish {self._busy or 'the run end'}"
                                     " (alerts going out; Ctrl-C to stop waiting)")
            except KeyboardInterrupt:
                plugins.warn(f"interrupted while plugins handled {self._busy or 'the run end'}"
                             " (alerts may not have gone out)")
                raise
        if self._thread.is_alive():
            plugins.warn(f"a plugin was still handling {self._busy or 'an event'} "
                         f"{time.monotonic() - start:.0f}s after the run ended; not waiting")
