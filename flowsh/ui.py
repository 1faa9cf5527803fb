"""What a person or a program sees of a run.

* `TTYReporter`: colour and a live view of running steps, only on a terminal.
* `PlainReporter`: timestamped lines for cron, CI and log files.
* `JSONReporter`: one JSON object per event per line (``--json``).

Step output goes to stdout; flowsh's own progress lines go to stderr, so a step's output
can be piped on while progress stays visible.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from typing import IO, Any

from flowsh.durations import format_duration
from flowsh.model import Workflow
from flowsh.runopts import Reporter
from flowsh.secrets import url_without_password
from flowsh.state import (
    FAILED,
    INTERRUPTED,
    PENDING,
    RETRYING,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    RunRecord,
    StepRecord,
    display_order,
    instance_parent,
)


def _stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def _outcome(step: StepRecord) -> str:
    took = f" in {format_duration(step.duration)}" if step.duration is not None else ""
    if step.status == SUCCEEDED:
        return f"succeeded{took}"
    if step.status == SKIPPED:
        return f"skipped ({step.message})"
    return f"{step.status}{took}: {step.message}"


def summary(run: RunRecord) -> str:
    counts: dict[str, int] = {}
    for rec in run.steps.values():
        if instance_parent(rec.name) is not None:  # its step's status stands for it
            continue
        counts[rec.status] = counts.get(rec.status, 0) + 1
    parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    took = format_duration(run.duration or 0.0)
    return f"run {run.run_id} {run.status} in {took} ({parts})"


def plural(count: int, noun: str) -> str:
    """`1 step`, `2 steps`, `0 steps`."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def next_steps(run: RunRecord, state_url: str | None) -> str:
    """The commands that show and finish a failed run, pasteable as they are (with the
    store the run used, when it is not the default)."""
    state = f" --state {shlex.quote(url_without_password(state_url))}" if state_url else ""
    return (f"see: flowsh status {run.run_id}{state}  |  "
            f"continue: flowsh resume {run.run_id}{state}")


class PlainReporter(Reporter):
    def __init__(self, *, show_output: bool = True, out: IO[str] | None = None,
                 err: IO[str] | None = None, state_url: str | None = None) -> None:
        self.state_url = state_url
        self.wants_output = show_output
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.prefix = False
        self.total = 0
        self.done = 0  # counted, not recounted per step: a 10,000-step run stays O(N)

    def _say(self, text: str) -> None:
        self.err.write(f"{_stamp()} {text}\n")
        self.err.flush()

    def run_started(self, run: RunRecord, wf: Workflow) -> None:
        own = [r for r in run.steps.values() if instance_parent(r.name) is None]
        self.total = len(own)  # steps, not a foreach step's items
        self.done = sum(1 for r in own if r.status == SUCCEEDED)
        verb = "resuming" if self.done else "starting"
        self._say(f"{wf.name}: {verb} run {run.run_id} ({plural(self.total, 'step')})")

    def step_started(self, run: RunRecord, step: StepRecord) -> None:
        attempt = f" (attempt {step.attempts})" if step.attempts > 1 else ""
        self._say(f"{step.name}: started{attempt}")

    def step_output(self, step: str, line: str) -> None:
        self.out.write(f"[{step}] {line}\n" if self.prefix else f"{line}\n")
        self.out.flush()

    def step_retrying(self, run: RunRecord, step: StepRecord, delay: float) -> None:
        self._say(f"{step.name}: {step.message} (attempt {step.attempts}); "
                  f"retrying in {format_duration(delay)}")

    def step_waiting(self, run: RunRecord, step: StepRecord, pool: str) -> None:
        self._say(f"{step.name}: waiting for pool {pool}")

    def step_finished(self, run: RunRecord, step: StepRecord) -> None:
        if instance_parent(step.name) is not None:  # the count is of steps, not items
            self._say(f"{step.name}: {_outcome(step)}")
            return
        self.done += step.status in (SUCCEEDED, FAILED, SKIPPED)
        self._say(f"{step.name}: {_outcome(step)} [{self.done}/{self.total}]")

    def run_finished(self, run: RunRecord) -> None:
        self._say(summary(run))
        if run.status in (FAILED, INTERRUPTED):
            self._say(next_steps(run, self.state_url))


class QuietReporter(PlainReporter):
    """``--quiet``: nothing unless the run fails."""

    def __init__(self, state_url: str | None = None) -> None:
        super().__init__(show_output=False, state_url=state_url)

    def run_started(self, run: RunRecord, wf: Workflow) -> None:
        own = [r for r in run.steps.values() if instance_parent(r.name) is None]
        self.total = len(own)  # steps, not a foreach step's items
        self.done = sum(1 for r in own if r.status == SUCCEEDED)

    def step_started(self, run: RunRecord, step: StepRecord) -> None: ...
    def step_retrying(self, run: RunRecord, step: StepRecord, delay: float) -> None: ...
    def step_waiting(self, run: RunRecord, step: StepRecord, pool: str) -> None: ...

    def step_finished(self, run: RunRecord, step: StepRecord) -> None:
        if step.status == FAILED:
            super().step_finished(run, step)
        elif instance_parent(step.name) is None:
            self.done += step.status in (SUCCEEDED, SKIPPED)

    def run_finished(self, run: RunRecord) -> None:
        if run.status != SUCCEEDED:
            super().run_finished(run)


class JSONReporter(Reporter):
    """One event per line on stdout; step output is in the logs, not here."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out or sys.stdout

    def _emit(self, event: str, run: RunRecord, **data: Any) -> None:
        obj = {"event": event, "time": time.time(), "run_id": run.run_id,
               "workflow": run.workflow, **data}
        self.out.write(json.dumps(obj) + "\n")
        self.out.flush()

    def run_started(self, run: RunRecord, wf: Workflow) -> None:
        self._emit("run_started", run, steps=list(run.steps))

    def step_started(self, run: RunRecord, step: StepRecord) -> None:
        self._emit("step_started", run, step=step.name, attempt=step.attempts)

    def step_retrying(self, run: RunRecord, step: StepRecord, delay: float) -> None:
        self._emit("step_retrying", run, step=step.name, attempt=step.attempts,
                   exit_code=step.exit_code, message=step.message, delay=round(delay, 3))

    def step_waiting(self, run: RunRecord, step: StepRecord, pool: str) -> None:
        self._emit("step_waiting", run, step=step.name, attempt=step.attempts + 1, pool=pool)

    def step_finished(self, run: RunRecord, step: StepRecord) -> None:
        self._emit("step_finished", run, step=step.name, status=step.status,
                   attempt=step.attempts, exit_code=step.exit_code, message=step.message,
                   duration=step.duration, outputs=step.outputs)

    def run_finished(self, run: RunRecord) -> None:
        self._emit("run_finished", run, status=run.status, exit_code=run.exit_code,
                   duration=run.duration)


class TTYReporter(PlainReporter):
    """Colour, and a live table of steps: state, attempt, elapsed, estimate from history.

    Finished steps are also printed as lines above the table, so the scrollback keeps the
    story after the (transient) table is gone.
    """

    STYLE = {SUCCEEDED: "green", FAILED: "bold red", SKIPPED: "dim", INTERRUPTED: "yellow"}
    STATE = {
        "pending": ("·", "dim"), "running": ("▶", "cyan"), "retrying": ("↻", "yellow"),
        SUCCEEDED: ("✓", "green"), FAILED: ("✗", "bold red"), SKIPPED: ("-", "dim"),
        INTERRUPTED: ("!", "yellow"),
    }
    MAX_ROWS = 16  # beyond this, finished and pending steps fold into summary rows
    HISTORY = 20

    def __init__(self, state_url: str | None = None) -> None:
        super().__init__(show_output=True)
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False)
        self.out_console = Console(highlight=False, soft_wrap=True)
        self.running: dict[str, float] = {}
        self.pool_wait: dict[str, str] = {}  # step -> the pool it waits for
        self.live: Any = None
        self.state_url = state_url
        self.run: RunRecord | None = None
        self.allowed: dict[str, int] = {}
        self.estimates: dict[str, float] = {}

    def _load_estimates(self, wf: Workflow) -> dict[str, float]:
        """Median step durations of recent runs; the view works without them."""
        try:
            from flowsh.stats import compute, load_history
            from flowsh.store import open_backend

            backend = open_backend(self.state_url)
            try:
                runs = load_history(backend, wf.identity, limit=self.HISTORY)
            finally:
                backend.close()
            return compute(wf.identity, runs).estimates()
        except Exception:
            return {}

    def _row(self, name: str, rec: StepRecord, now: float) -> tuple[str, ...]:
        mark, style = self.STATE.get(rec.status, ("?", ""))
        allowed = self.allowed.get(instance_parent(name) or name, 1)
        attempt = f"{rec.attempts}/{allowed}" if rec.attempts else "-"
        if rec.status == RUNNING and name in self.running:
            elapsed = format_duration(now - self.running[name])
        elif rec.attempts and rec.duration is not None and rec.status != RETRYING:
            elapsed = format_duration(rec.duration)
        else:
            elapsed = ""
        est = self.estimates.get(name)
        estimate = f"~{format_duration(est)}" if est is not None else "-"
        if est and est >= 1 and rec.status == RUNNING and name in self.running:
            left = est - (now - self.running[name])
            estimate += f" ({format_duration(left)} left)" if left > 0 else " (overdue)"
        state: str = rec.status
        if rec.status == PENDING and name in self.pool_wait:
            state, style = f"waiting for pool {self.pool_wait[name]}", "yellow"
        from rich.markup import escape

        # `sync[eu]`, a foreach item, is no markup tag.
        return (f"[{style}]{mark}[/]", escape(name), f"[{style}]{state}[/]", attempt,
                elapsed, f"[dim]{estimate}[/]")

    def _render(self) -> Any:
        from rich.table import Table

        table = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold dim")
        for col, justify in (("", "left"), ("step", "left"), ("state", "left"),
                             ("attempt", "right"), ("elapsed", "right"), ("estimate", "left")):
            table.add_column(col, justify=justify)  # type: ignore[arg-type]
        if self.run is None:
            return table
        now = time.time()
        steps = [(n, self.run.steps[n]) for n in display_order(self.run)]
        if len(steps) > self.MAX_ROWS:
            active = [(n, r) for n, r in steps if r.status in (RUNNING, RETRYING, FAILED)]
            done = [(n, r) for n, r in steps if r.status in (SUCCEEDED, SKIPPED, INTERRUPTED)]
            pending = [(n, r) for n, r in steps if r.status == PENDING]
            room = max(0, self.MAX_ROWS - len(active))
            if done:
                table.add_row("", f"[dim]{len(done)} finished[/]", "", "", "", "")
            steps = active + pending[:room]
            if len(pending) > room:
                table.add_row("", f"[dim]… {len(pending) - room} more pending[/]",
                              "", "", "", "")
        for name, rec in steps:
            table.add_row(*self._row(name, rec, now))
        return table

    def run_started(self, run: RunRecord, wf: Workflow) -> None:
        from rich.live import Live

        self.total = sum(1 for n in run.steps if instance_parent(n) is None)
        self.run = run
        self.allowed = {s.name: s.retry_count + 1 for s in wf.steps}
        self.estimates = self._load_estimates(wf)
        count = plural(self.total, "step")
        self.console.print(f"[bold]{wf.name}[/] run [dim]{run.run_id}[/] ({count})")
        self.live = Live(self._render(), console=self.console, refresh_per_second=4,
                         transient=True, get_renderable=self._render)
        self.live.start()

    def step_started(self, run: RunRecord, step: StepRecord) -> None:
        self.pool_wait.pop(step.name, None)
        self.running[step.name] = time.time()

    def step_waiting(self, run: RunRecord, step: StepRecord, pool: str) -> None:
        self.pool_wait[step.name] = pool
        if self.live is None:
            super().step_waiting(run, step, pool)

    def step_output(self, step: str, line: str) -> None:
        from rich.text import Text

        text = Text(f"{step} │ ", style="dim") if self.prefix else Text()
        text.append(line)
        self.console.print(text) if self.live else self.out_console.print(text)

    def step_retrying(self, run: RunRecord, step: StepRecord, delay: float) -> None:
        self.running.pop(step.name, None)
        from rich.markup import escape

        self.console.print(f"[yellow]↻[/] {escape(step.name)}: {escape(step.message or '')}; "
                           f"retry {step.attempts + 1} in {format_duration(delay)}")

    def step_finished(self, run: RunRecord, step: StepRecord) -> None:
        self.running.pop(step.name, None)
        self.pool_wait.pop(step.name, None)
        mark = {SUCCEEDED: "✓", FAILED: "✗", SKIPPED: "-", INTERRUPTED: "!"}.get(step.status, "?")
        style = self.STYLE.get(step.status, "")
        from rich.markup import escape

        self.console.print(f"[{style}]{mark}[/] {escape(step.name)} "
                           f"[dim]{escape(_outcome(step))}[/]")

    def run_finished(self, run: RunRecord) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
        style = self.STYLE.get(run.status, "")
        self.console.print(f"[{style}]{summary(run)}[/]")
        if run.status in (FAILED, INTERRUPTED):
            from rich.markup import escape

            self.console.print(f"[dim]{escape(next_steps(run, self.state_url))}[/]")


def reporter_kind(*, json_events: bool = False, quiet: bool = False) -> str:
    """JSON events, quiet, the live view on a terminal, or plain lines (cron, CI, pipes)."""
    if json_events:
        return "json"
    if quiet:
        return "quiet"
    if sys.stderr.isatty() and sys.stdout.isatty():
        return "tty"
    return "plain"
