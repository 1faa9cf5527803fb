"""Built-in plugin: a JSON Lines event log, one object per event.

Every object has ``event`` (run_started, step_started, step_retrying, step_waiting, step_finished,
run_finished), ``time``, ``run_id``, ``workflow``, ``step`` (null for run events),
``attempt``, ``status``, ``exit_code``, ``duration`` (seconds), ``started_at`` and
``ended_at``; timestamps are RFC 3339 in UTC. ``step_retrying`` adds ``delay``;
``step_waiting`` (every slot of the step's pool is held) adds ``pool``.

Path: ``monitor.jsonl`` (true = ``$FLOWSH_HOME/logs/events.jsonl``, false = off, or a path).
`flowsh report` reads it back to draw each retry on the timeline.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowsh import hookimpl, monitorfiles

DEFAULT = monitorfiles.EVENTS_DEFAULT
# The object written for one event (public: tests, `report` and monitorfiles.log_crash
# share the shape).
event = monitorfiles.event

if TYPE_CHECKING:
    from flowsh.model import Workflow
    from flowsh.state import RunRecord, StepRecord


def jsonl_path(workflow: Workflow) -> Path | None:
    return monitorfiles.resolve(workflow.monitor.jsonl, DEFAULT, workflow)


def _write(workflow: Workflow, data: dict[str, Any]) -> None:
    path = jsonl_path(workflow)
    if path is None:
        return
    try:
        monitorfiles.append_locked(path, monitorfiles.event_line(data))
    except OSError as exc:
        from flowsh.plugins import warn

        warn(f"JSON event log {path}: {exc.strerror or exc}; not logging this run there")


@hookimpl
def flowsh_run_started(run: RunRecord, workflow: Workflow) -> None:
    _write(workflow, event("run_started", run, resumed_from=run.resumed_from,
                           scheduled_time=run.scheduled_time))


@hookimpl
def flowsh_step_started(run: RunRecord, step: StepRecord, workflow: Workflow) -> None:
    _write(workflow, event("step_started", run, step))


@hookimpl
def flowsh_step_retrying(
    run: RunRecord, step: StepRecord, workflow: Workflow, delay: float
) -> None:
    _write(workflow, event("step_retrying", run, step, delay=round(delay, 3)))


@hookimpl
def flowsh_step_waiting(run: RunRecord, step: StepRecord, workflow: Workflow, pool: str) -> None:
    _write(workflow, event("step_waiting", run, step, pool=pool))


@hookimpl
def flowsh_step_finished(run: RunRecord, step: StepRecord, workflow: Workflow) -> None:
    _write(workflow, event("step_finished", run, step))


@hookimpl
def flowsh_run_finished(run: RunRecord, workflow: Workflow) -> None:
    _write(workflow, event("run_finished", run, scheduled_time=run.scheduled_time))
    monitorfiles.release(jsonl_path(workflow))
