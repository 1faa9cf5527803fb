"""What a caller hands the engine: the run's options and the reporter that shows it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flowsh import plugins
from flowsh.model import Workflow
from flowsh.state import RunRecord, StateBackend, StepRecord

# `flowsh run`'s params from its environment (a JSON object of strings): what `flowsh serve`
# hands a run, so that no param shows on its command line (runcmd.py).
PARAMS_VAR = "FLOWSH_PARAMS_JSON"


class Reporter:
    """What a person (or a machine) sees of a run. The base class shows nothing."""

    wants_output = False
    prefix = False  # prefix output lines with the step name (set by the engine)

    def run_started(self, run: RunRecord, wf: Workflow) -> None: ...
    def step_started(self, run: RunRecord, step: StepRecord) -> None: ...
    def step_output(self, step: str, line: str) -> None: ...
    def step_retrying(self, run: RunRecord, step: StepRecord, delay: float) -> None: ...
    def step_waiting(self, run: RunRecord, step: StepRecord, pool: str) -> None: ...
    def step_finished(self, run: RunRecord, step: StepRecord) -> None: ...
    def run_finished(self, run: RunRecord) -> None: ...


@dataclass
class RunOptions:
    params: dict[str, str] = field(default_factory=dict)
    concurrency: int | None = None
    state_url: str | None = None
    backend: StateBackend | None = None  # an open backend wins over state_url
    reporter: Reporter | None = None
    executor: str | None = None  # default: the workflow's `executor`
    overlap: str | None = None
    lock_timeout: float | None = None
    # Resume: continue this run. Without `only`, every step that did not succeed runs
    # again; with `only` (flowsh retry), exactly those steps run again, whatever they were.
    resume: RunRecord | None = None
    only: set[str] | None = None
    # A new run of part of the workflow (`--only`, `--from`, `--until`): the steps it
    # runs; the others are skipped as "not selected" (docs/semantics.md SELECT).
    select: set[str] | None = None
    run_id: str | None = None
    plugin_options: dict[str, Any] = field(default_factory=dict)  # RunContext.options
    # The slot a new run stands for (RFC 3339, flowsh/slot.py); a resume keeps its own.
    scheduled_time: str | None = None
    # Run steps with `sources:` even when up to date: all of them, or these (UPTODATE-5).
    force: bool = False
    force_steps: set[str] = field(default_factory=set)


class GuardedReporter(Reporter):
    """Another reporter with every call guarded as a plugin's hook is: one that raises is
    reported once on stderr and the run goes on (a reporter is a plugin's, and a run must
    never end because its view did)."""

    def __init__(self, inner: Reporter) -> None:
        self.inner = inner
        self.wants_output = inner.wants_output
        self.who = type(inner).__module__.split(".")[0]

    @property  # type: ignore[override]
    def prefix(self) -> bool:
        return self.inner.prefix

    @prefix.setter
    def prefix(self, value: bool) -> None:
        self.inner.prefix = value

    def _call(self, method: str, *args: Any) -> None:
        try:
            getattr(self.inner, method)(*args)
        except (Exception, SystemExit) as exc:
            plugins.warn(f"reporter of {self.who} failed in {method}: "
                         f"{type(exc).__name__}: {exc}")

    def run_started(self, run: RunRecord, wf: Workflow) -> None:
        self._call("run_started", run, wf)

    def step_started(self, run: RunRecord, step: StepRecord) -> None:
        self._call("step_started", run, step)

    def step_output(self, step: str, line: str) -> None:
        self._call("step_output", step, line)

    def step_retrying(self, run: RunRecord, step: StepRecord, delay: float) -> None:
        self._call("step_retrying", run, step, delay)

    def step_waiting(self, run: RunRecord, step: StepRecord, pool: str) -> None:
        # Newer than the other methods: a reporter written before pools may lack it.
        if hasattr(self.inner, "step_waiting"):
            self._call("step_waiting", run, step, pool)

    def step_finished(self, run: RunRecord, step: StepRecord) -> None:
        self._call("step_finished", run, step)

    def run_finished(self, run: RunRecord) -> None:
        self._call("run_finished", run)
