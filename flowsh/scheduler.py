"""`flowsh scheduler run`: a foreground cron for containers and hosts without one.

One loop, no threads: it sleeps until the next fire time (at most a second, so finished
runs are reported promptly), starts `flowsh run FILE` as a child process for each due
schedule, and reaps children. Overlaps follow the workflow's `overlap` (the child's own
lock decides; with `skip` a still-running child of ours is not even started again).

A fire time missed by more than `grace` seconds (the machine slept, the process was
stopped) is a misfire: policy ``skip`` drops it, ``run-once`` runs once however many were
missed. SIGTERM/SIGINT stop the loop: running children get SIGTERM (they record their run
as interrupted, resumable), are waited for, and the scheduler exits 0.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from flowsh.cron import Schedule, next_times, parse
from flowsh.model import Workflow

MISFIRE_POLICIES = ("skip", "run-once")


@dataclass
class _Entry:
    wf: Workflow
    sched: Schedule
    due: datetime
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)


def _now(sched: Schedule) -> datetime:
    zone = sched.zone()
    return datetime.now(zone) if zone else datetime.now().astimezone()


class SchedulerLoop:
    def __init__(
        self,
        workflows: list[Workflow],
        *,
        misfire: str = "skip",
        grace: float = 1.0,
        argv: Callable[[Workflow], list[str]] | None = None,
        out: Callable[[str], None] | None = None,
        term_timeout: float = 30.0,
    ) -> None:
        if misfire not in MISFIRE_POLICIES:
            raise ValueError(f"misfire policy must be one of {', '.join(MISFIRE_POLICIES)}")
        self.misfire = misfire
        self.grace = grace
        self.argv = argv or _flowsh_run
        self.out = out or (lambda line: print(line, flush=True))
        self.term_timeout = term_timeout
        self.stop = threading.Event()
        self.entries: list[_Entry] = []
        for wf in workflows:
            for text in wf.schedule:
                sched = parse(text)
                self.entries.append(_Entry(wf, sched, next_times(sched, _now(sched), 1)[0]))

    def say(self, message: str) -> None:
        self.out(f"{datetime.now().astimezone().isoformat(timespec='seconds')} {message}")

    def request_stop(self, signum: int = 0, frame: Any = None) -> None:
        self.stop.set()

    def run(self) -> int:
        old = {s: signal.signal(s, self.request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            for e in self.entries:
                self.say(f"{e.wf.name}: {e.sched.text!r}, first run at {e.due.isoformat()}")
            while not self.stop.is_set():
                self._tick()
                wait = min(
                    [max(0.0, (e.due - _now(e.sched)).total_seconds()) for e in self.entries]
                    + [1.0]
                )
                self.stop.wait(wait)
            self._shutdown()
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
        return 0

    def _tick(self) -> None:
        self._reap()
        for e in self.entries:
            now = _now(e.sched)
            if now < e.due:
                continue
            late = (now - e.due).total_seconds()
            if late <= self.grace:
                self._launch(e, "scheduled")
                e.due = next_times(e.sched, e.due, 1)[0]
                continue
            missed = self._count_missed(e, now)
            if self.misfire == "run-once":
                self._launch(e, f"misfire: {missed} missed, running once")
            else:
                self.say(f"{e.wf.name}: misfire: skipped {missed} missed run(s)")
            e.due = next_times(e.sched, now, 1)[0]

    @staticmethod
    def _count_missed(e: _Entry, now: datetime) -> int:
        n, t = 0, e.due
        while t <= now and n < 10000:
            n += 1
            t = next_times(e.sched, t, 1)[0]
        return n

    def _launch(self, e: _Entry, why: str) -> None:
        alive = [c for c in e.children if c.poll() is None]
        if alive and e.wf.overlap == "skip":
            self.say(
                f"{e.wf.name}: skipped ({why}): the previous run is still going (overlap: skip)"
            )
            return
        argv = self.argv(e.wf)
        try:
            child = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        except OSError as exc:
            self.say(f"{e.wf.name}: cannot start {argv[0]}: {exc.strerror}")
            return
        e.children.append(child)
        self.say(f"{e.wf.name}: started ({why}), pid {child.pid}")

    def _reap(self) -> None:
        for e in self.entries:
            for child in list(e.children):
                code = child.poll()
                if code is None:
                    continue
                e.children.remove(child)
                note = " (skipped: another run held the lock)" if code == 75 else ""
                self.say(f"{e.wf.name}: pid {child.pid} exited {code}{note}")

    def _shutdown(self) -> None:
        children = [c for e in self.entries for c in e.children if c.poll() is None]
        self.say(f"stopping: {len(children)} run(s) still going get SIGTERM")
        for c in children:
            c.send_signal(signal.SIGTERM)
        for c in children:
            try:
                c.wait(self.term_timeout)
            except subprocess.TimeoutExpired:
                c.kill()
                c.wait()
        self._reap()
        self.say("scheduler stopped")


def _flowsh_run(wf: Workflow) -> list[str]:
    from flowsh.export import flowsh_argv  # here: see schedjob.scheduled_job

    assert wf.path is not None
    # --resume: a run that failed or crashed is finished by the next tick, as in cron lines.
    # --scheduled: the child computes the slot it stands for as it starts (SLOT-2), which
    # after a misfire is the latest one missed, not the first.
    return [*flowsh_argv(), "run", str(Path(wf.path)), "--resume", "--scheduled"]


