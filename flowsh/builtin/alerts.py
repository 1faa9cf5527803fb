"""Built-in plugin ``alerts``: run events -> `flowsh.notify.Alert` -> routed channels.

run_failed / run_succeeded when a run ends, step_failed when a step ends failed,
step_retry when an attempt fails and another follows, run_long when a run is still going
after ``notify.long_after`` (a timer thread, cancelled when the run ends).
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from flowsh import hookimpl

if TYPE_CHECKING:
    from flowsh.model import Workflow
    from flowsh.notify import Alert, Outcome
    from flowsh.secrets import Masker
    from flowsh.state import RunRecord, StepRecord

_timers: dict[str, threading.Timer] = {}
_lock = threading.Lock()


def masker_for(workflow: Workflow, run: RunRecord | None = None) -> Masker:
    """Secrets of the workflow (named, env_file, secret-looking env) for masking alerts."""
    from flowsh.secrets import Masker

    env: dict[str, str] = dict(os.environ)
    if workflow.env_file:
        from flowsh.loader import read_env_file

        base = Path(workflow.path).parent if workflow.path else Path.cwd()
        # The engine reports a bad env_file; masking must not fail because of it.
        with contextlib.suppress(Exception):
            env.update(read_env_file(base / workflow.env_file))
    env.update(workflow.params)
    env.update(workflow.env)
    return Masker.for_env(env, workflow.secret_names())


def alert_for(event: str, run: RunRecord, workflow: Workflow, *,
              step: StepRecord | None = None, message: str = "") -> Alert | None:
    """The Alert for ``event``, or None when ``notify.events`` gives it no severity."""
    import socket

    from flowsh.notify import Alert, effective_notify, events_of, log_tail

    severity = events_of(effective_notify(workflow)).get(event)
    if severity is None:
        return None
    return Alert(
        severity=severity,
        event=event,
        workflow=run.workflow,
        run_id=run.run_id,
        step=step.name if step else None,
        exit_code=step.exit_code if step else run.exit_code,
        duration=(step.duration if step else run.duration),
        host=run.host or socket.gethostname(),
        log_tail=log_tail(step.log_path) if step else "",
        message=message,
        file=workflow.path or run.file,
    )


def send(alert: Alert | None, workflow: Workflow, run: RunRecord | None = None
         ) -> list[Outcome]:
    from flowsh.notify import dispatch, effective_notify

    if alert is None:
        return []
    return dispatch(alert, effective_notify(workflow), masker=masker_for(workflow, run))


def _failed_step(run: RunRecord, workflow: Workflow) -> StepRecord | None:
    from flowsh.state import FAILED, INTERRUPTED

    order = run.step_names or [s.name for s in workflow.steps]
    for status in (FAILED, INTERRUPTED):
        for name in order:
            rec = run.steps.get(name)
            if rec is not None and rec.status == status:
                return rec
    return None


def _describe_failure(step: StepRecord) -> str:
    if step.exit_code == 124:
        how = "timed out (exit 124)"
    elif step.signal:
        how = f"was killed by signal {step.signal}"
    elif step.exit_code is not None:
        how = f"exited {step.exit_code}"
    else:
        how = step.status
    extra = f": {step.message}" if step.message else ""
    attempts = f" after {step.attempts} attempts" if step.attempts > 1 else ""
    return f"step {step.name!r} {how}{attempts}{extra}"


@hookimpl
def flowsh_run_started(run: RunRecord, workflow: Workflow) -> None:
    from flowsh.notify import check_notify, effective_notify, events_of
    from flowsh.plugins import warn

    try:
        check_notify(workflow)
    except Exception as exc:  # reported now rather than when the alert is due
        warn(str(exc))
    notify = effective_notify(workflow)
    if notify.long_after is None or "run_long" not in events_of(notify):
        return
    timer = threading.Timer(notify.long_after, _run_long, args=(run, workflow, notify.long_after))
    timer.daemon = True
    timer.name = f"flowsh-run-long-{run.run_id}"
    with _lock:
        _timers[run.run_id] = timer
    timer.start()


def _run_long(run: RunRecord, workflow: Workflow, after: float) -> None:
    from flowsh.durations import format_duration

    with _lock:
        if _timers.pop(run.run_id, None) is None:
            return  # the run ended as the timer fired
    running = [s.name for s in run.steps.values() if s.status in ("running", "retrying")]
    now = f"; running: {', '.join(running)}" if running else ""
    send(alert_for("run_long", run, workflow,
                   message=f"run {run.run_id} is still running after "
                           f"{format_duration(after)}{now}"), workflow, run)


@hookimpl
def flowsh_step_retrying(run: RunRecord, step: StepRecord, workflow: Workflow,
                         delay: float) -> None:
    from flowsh.durations import format_duration

    msg = (f"{_describe_failure(step)} on attempt {step.attempts}; "
           f"retrying in {format_duration(delay)}")
    send(alert_for("step_retry", run, workflow, step=step, message=msg), workflow, run)


@hookimpl
def flowsh_step_finished(run: RunRecord, step: StepRecord, workflow: Workflow) -> None:
    from flowsh.state import FAILED

    if step.status != FAILED:
        return
    send(alert_for("step_failed", run, workflow, step=step, message=_describe_failure(step)),
         workflow, run)


@hookimpl
def flowsh_run_finished(run: RunRecord, workflow: Workflow) -> None:
    from flowsh.state import CRASHED, FAILED, INTERRUPTED, SUCCEEDED

    with _lock:
        timer = _timers.pop(run.run_id, None)
    if timer is not None:
        timer.cancel()
    if run.status == SUCCEEDED:
        send(alert_for("run_succeeded", run, workflow,
                       message=f"run {run.run_id} succeeded"), workflow, run)
        return
    if run.status not in (FAILED, INTERRUPTED, CRASHED):
        return
    failed = _failed_step(run, workflow)
    what = "was interrupted" if run.status == INTERRUPTED else "failed"
    msg = f"run {run.run_id} {what}" + (f": {_describe_failure(failed)}" if failed else "")
    alert = alert_for("run_failed", run, workflow, step=failed, message=msg)
    if alert is not None:
        alert.duration = run.duration  # the run's, not the failed step's
        if failed is None:
            alert.exit_code = run.exit_code
    send(alert, workflow, run)
