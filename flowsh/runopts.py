"""What a caller hands the engine: the run's options and the reporter that shows it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flowsh.model import Workflow
from flowsh.state import RunRecord, StateBackend, StepRecord


class Reporter:
    """What a person (or a machine) sees of a run. The base class shows nothing."""

    wants_output = False
    prefix = False  # prefix output lines with the step name (set by the engine)

    def run_started(self, run: RunRecord, wf: Workflow) -> None: ...
    def step_started(self, run: RunRecord, step: StepRecord) -> None: ...
    def step_output(self, step: str, line: str) -> None: ...
    def step_retrying(self, run: RunRecord, step: StepRecord, delay: float) -> None: ...
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
    run_id: str | None = None
    plugin_options: dict[str, Any] = field(default_factory=dict)  # RunContext.options
