"""Built-in plugin: the seed's CSV log (`log_workflow`), done properly.

One row per event, columns ``timestamp,workflow_id,step,status,message`` like the seed's
``workflow_logs.csv``; quoting by the csv module, so messages holding commas, quotes or
newlines read back intact. ``workflow_id`` is ``<workflow>_<run_id>`` (the seed's
``etl_<epoch>``); run-level rows have step ``-``, which no step can be named.

Path: ``monitor.csv`` in the workflow (true = ``$FLOWSH_HOME/logs/workflow_logs.csv``,
false = off, or a path). Rows are appended under a file lock, so concurrent runs share it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from flowsh import hookimpl, monitorfiles

if TYPE_CHECKING:
    from flowsh.model import Workflow
    from flowsh.state import RunRecord, StepRecord

# Shared with monitorfiles.log_crash, which writes a crash found after the fact.
COLUMNS = monitorfiles.CSV_COLUMNS
RUN_STEP = monitorfiles.RUN_STEP
_row = monitorfiles.csv_row
_step_summary = monitorfiles.step_summary


def csv_path(workflow: Workflow) -> Path | None:
    return monitorfiles.resolve(workflow.monitor.csv, monitorfiles.CSV_DEFAULT, workflow)


def _write(workflow: Workflow, run: RunRecord, step: str, status: str, message: str) -> None:
    path = csv_path(workflow)
    if path is None:
        return
    row = monitorfiles.csv_record(run, step, status, message)
    try:
        monitorfiles.append_locked(path, row, header=_row(*COLUMNS))
    except OSError as exc:
        from flowsh.plugins import warn

        warn(f"CSV log {path}: {exc.strerror or exc}; not logging this run there")


@hookimpl
def flowsh_run_started(run: RunRecord, workflow: Workflow) -> None:
    what = f"resumed from {run.resumed_from}" if run.resumed_from else "started"
    slot = f" for slot {run.scheduled_time}" if run.scheduled_time else ""
    _write(workflow, run, RUN_STEP, "started",
           f"run {what} on {run.host or '?'} pid {run.pid}{slot}")


@hookimpl
def flowsh_step_started(run: RunRecord, step: StepRecord, workflow: Workflow) -> None:
    allowed = monitorfiles.attempts_allowed(workflow, step.name, step.attempts)
    _write(workflow, run, step.name, "running", f"attempt {step.attempts}/{allowed or '?'}")


@hookimpl
def flowsh_step_retrying(
    run: RunRecord, step: StepRecord, workflow: Workflow, delay: float
) -> None:
    why = _step_summary(step) or "failed"
    _write(
        workflow, run, step.name, "retrying",
        f"attempt {step.attempts} failed: {why}; retrying in {delay:.1f}s",
    )


@hookimpl
def flowsh_step_finished(run: RunRecord, step: StepRecord, workflow: Workflow) -> None:
    _write(workflow, run, step.name, step.status, _step_summary(step))


@hookimpl
def flowsh_run_finished(run: RunRecord, workflow: Workflow) -> None:
    counts: dict[str, int] = {}
    for s in run.steps.values():
        counts[s.status] = counts.get(s.status, 0) + 1
    tally = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    took = f" after {run.duration:.1f}s" if run.duration is not None else ""
    _write(
        workflow, run, RUN_STEP, run.status, f"exit {run.exit_code}{took}; steps: {tally}"
    )
    monitorfiles.release(csv_path(workflow))
