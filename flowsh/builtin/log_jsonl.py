"""Built-in plugin: a JSON Lines event log, one object per event.

Every object has ``event`` (run_started, step_started, step_retrying, step_finished,
run_finished), ``time``, ``run_id``, ``workflow``, ``step`` (null for run events),
``attempt``, ``status``, ``exit_code``, ``duration`` (seconds), ``started_at`` and
``ended_at``; timestamps are RFC 3339 in UTC. ``step_retrying`` adds ``delay``.

Path: ``monitor.jsonl`` (true = ``$FLOWSH_HOME/logs/events.jsonl``, false = off, or a path).
`flowsh report` reads it back to draw each retry on the timeline.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowsh import hookimpl, monitorfiles

DEFAULT = monitorfiles.EVENTS_DEFAULT

if TYPE_CHECKING:
    from flowsh.model import Workflow
    from flowsh.state import RunRecord, StepRecord


def jsonl_path(workflow: Workflow) -> Path | None:
    return monitorfiles.resolve(workflow.monitor.jsonl, DEFAULT, workflow)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def event(
    name: str, run: RunRecord, step: StepRecord | None = None, **extra: Any
) -> dict[str, Any]:
    """The object written for one event (public so tests and `report` share the shape)."""
    data: dict[str, Any] = {
        "event": name,
        "time": monitorfiles.rfc3339(time.time()),
        "run_id": run.run_id,
        "workflow": run.workflow,
        "step": None,
        "attempt": None,
        "status": run.status,
        "exit_code": run.exit_code,
        "duration": _round(run.duration) if name == "run_finished" else None,
        "started_at": monitorfiles.rfc3339(run.started_at or None),
        "ended_at": monitorfiles.rfc3339(run.ended_at),
    }
    if step is not None:
        data.update(
            step=step.name,
            attempt=step.attempts,
            status=step.status,
            exit_code=step.exit_code,
            duration=None if name == "step_started" else _round(step.duration),
            started_at=monitorfiles.rfc3339(step.started_at),
            ended_at=None if name == "step_started" else monitorfiles.rfc3339(step.ended_at),
        )
        if step.signal:
            data["signal"] = step.signal
        if step.message:
            data["message"] = step.message
    data.update(extra)
    return data


def _write(workflow: Workflow, data: dict[str, Any]) -> None:
    path = jsonl_path(workflow)
    if path is None:
        return
    line = json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n"
    try:
        monitorfiles.append_locked(path, line.encode("utf-8"))
    except OSError as exc:
        from flowsh.plugins import warn

        warn(f"JSON event log {path}: {exc.strerror or exc}; not logging this run there")


@hookimpl
def flowsh_run_started(run: RunRecord, workflow: Workflow) -> None:
    _write(workflow, event("run_started", run, resumed_from=run.resumed_from))


@hookimpl
def flowsh_step_started(run: RunRecord, step: StepRecord, workflow: Workflow) -> None:
    _write(workflow, event("step_started", run, step))


@hookimpl
def flowsh_step_retrying(
    run: RunRecord, step: StepRecord, workflow: Workflow, delay: float
) -> None:
    _write(workflow, event("step_retrying", run, step, delay=round(delay, 3)))


@hookimpl
def flowsh_step_finished(run: RunRecord, step: StepRecord, workflow: Workflow) -> None:
    _write(workflow, event("step_finished", run, step))


@hookimpl
def flowsh_run_finished(run: RunRecord, workflow: Workflow) -> None:
    _write(workflow, event("run_finished", run))
    monitorfiles.release(jsonl_path(workflow))
