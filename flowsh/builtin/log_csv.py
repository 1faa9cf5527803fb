"""Built-in plugin: the seed's CSV log (`log_workflow`), done properly.

One row per event, columns ``timestamp,workflow_id,step,status,message`` like the seed's
``workflow_logs.csv``; quoting by the csv module, so messages holding commas, quotes or
newlines read back intact. ``workflow_id`` is ``<workflow>_<run_id>`` (the seed's
``etl_<epoch>``); run-level rows have step ``-``, which no step can be named.

Path: ``monitor.csv`` in the workflow (true = ``$FLOWSH_HOME/logs/workflow_logs.csv``,
false = off, or a path). Rows are appended under a file lock, so concurrent runs share it.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import TYPE_CHECKING

from flowsh import hookimpl, monitorfiles

if TYPE_CHECKING:
    from flowsh.model import Workflow
    from flowsh.state import RunRecord, StepRecord

COLUMNS = ("timestamp", "workflow_id", "step", "status", "message")
RUN_STEP = "-"


def csv_path(workflow: Workflow) -> Path | None:
    return monitorfiles.resolve(workflow.monitor.csv, "logs/workflow_logs.csv", workflow)


def _row(*fields: str) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(fields)
    return buf.getvalue().encode("utf-8")


def _write(workflow: Workflow, run: RunRecord, step: str, status: str, message: str) -> None:
    path = csv_path(workflow)
    if path is None:
        return
    stamp = monitorfiles.rfc3339(time.time()) or ""
    row = _row(stamp, f"{run.workflow}_{run.run_id}", step, status, message)
    try:
        monitorfiles.append_locked(path, row, header=_row(*COLUMNS))
    except OSError as exc:
        from flowsh.plugins import warn

        warn(f"CSV log {path}: {exc.strerror or exc}; not logging this run there")


def _step_summary(step: StepRecord) -> str:
    """``exit code 3 after 1.2s, 2 attempts``; the engine's message says why it failed."""
    from flowsh.durations import format_duration

    parts = [step.message] if step.message else []
    if not step.message and step.exit_code is not None:
        parts.append(f"exit code {step.exit_code}")
    if step.duration is not None and step.attempts:
        parts.append(f"after {format_duration(step.duration)}")
    text = " ".join(parts)
    if step.attempts > 1:
        text += f", {step.attempts} attempts"
    return text


@hookimpl
def flowsh_run_started(run: RunRecord, workflow: Workflow) -> None:
    what = f"resumed from {run.resumed_from}" if run.resumed_from else "started"
    _write(workflow, run, RUN_STEP, "started", f"run {what} on {run.host or '?'} pid {run.pid}")


@hookimpl
def flowsh_step_started(run: RunRecord, step: StepRecord, workflow: Workflow) -> None:
    allowed = monitorfiles.attempts_allowed(workflow, step.name)
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
