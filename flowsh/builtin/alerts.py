"""Built-in plugin ``alerts``: run events -> `flowsh.notify.Alert` -> routed channels.

run_failed / run_succeeded when a run ends, step_failed when a step ends failed,
step_retry when an attempt fails and another follows, run_long when a run is still going
after ``notify.long_after``, run_late when a run is still going at its ``deadline``
(flowsh/deadline.py); each a timer thread, cancelled when the run ends.
"""

from __future__ import annotations

import os
import threading
from datetime import datetime
from typing import TYPE_CHECKING

from flowsh import hookimpl
from flowsh.durations import format_duration
from flowsh.notify import Alert, dispatch, events_of, log_tail
from flowsh.state import CRASHED, FAILED, INTERRUPTED, RETRYING, RUNNING, SUCCEEDED

if TYPE_CHECKING:
    from flowsh.events import RunContext
    from flowsh.model import Notify, Workflow
    from flowsh.notify import Delivery
    from flowsh.state import RunRecord, StepRecord


def alert_for(event: str, run: RunRecord, workflow: Workflow, notify: Notify, *,
              step: StepRecord | None = None, message: str = "") -> Alert | None:
    """The Alert for ``event``, or None when ``notify.events`` gives it no severity."""
    severity = events_of(notify).get(event)
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
        host=run.host or os.uname().nodename,
        log_tail=log_tail(step.log_path) if step else "",
        message=message,
        file=workflow.path or run.file,
    )


def send(alert: Alert | None, ctx: RunContext) -> None:
    """Send on a thread of its own: a slow channel delays neither the run's other plugins
    (the CSV and JSONL logs share the event thread) nor the alerts after it (a critical
    run_failed behind four slow step_retry warnings). Each channel is bounded by its own
    timeout; the run's end waits for them all (`wait_sent`)."""
    if alert is None:
        return
    thread = threading.Thread(target=_dispatch, args=(alert, ctx), daemon=True,
                              name=f"flowsh-alert-{alert.event}")
    ctx.slot("alerts").setdefault("sending", []).append(thread)
    thread.start()


def _dispatch(alert: Alert, ctx: RunContext) -> list[Delivery]:
    return dispatch(alert, ctx.notify, masker=ctx.masker)


def wait_sent(ctx: RunContext) -> None:
    for thread in ctx.slot("alerts").pop("sending", []):
        thread.join()


def _failed_step(run: RunRecord, workflow: Workflow) -> StepRecord | None:
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
def flowsh_run_started(ctx: RunContext) -> None:
    from flowsh.notify import check_notify
    from flowsh.plugins import warn

    try:
        check_notify(ctx.workflow)
    except Exception as exc:  # reported now rather than when the alert is due
        warn(str(exc))
    notify = ctx.notify
    if notify.long_after is not None and "run_long" in events_of(notify):
        _start_timer(ctx, "timer", notify.long_after, _run_long, notify.long_after)
    if ctx.workflow.deadline and "run_late" in events_of(notify):
        from flowsh.deadline import of_run
        from flowsh.slot import now

        try:
            when = of_run(ctx)
        except Exception as exc:  # a bad FLOWSH_NOW: say so, never fail the run for it
            warn(f"deadline: {exc}")
            return
        if when is not None:
            # Already past at the start (a late start, a resume): late now, once (DEADLINE-3).
            delay = max(0.0, (when - now()).total_seconds())
            _start_timer(ctx, "late_timer", delay, _run_late, when)


def _start_timer(ctx: RunContext, key: str, delay: float, func: object, arg: object) -> None:
    timer = threading.Timer(delay, func, args=(ctx, arg))  # type: ignore[arg-type]
    timer.daemon = True
    timer.name = f"flowsh-{key}-{ctx.run.run_id}"
    ctx.slot("alerts")[key] = timer
    timer.start()


def _run_late(ctx: RunContext, when: object) -> None:
    from flowsh.slot import format_time

    run = ctx.run
    running = [s.name for s in list(run.steps.values()) if s.status in (RUNNING, RETRYING)]
    now = f"; running: {', '.join(running)}" if running else ""
    due = format_time(when) if isinstance(when, datetime) else str(when)
    send(alert_for("run_late", run, ctx.workflow, ctx.notify,
                   message=f"run {run.run_id} is still running past its deadline "
                           f"{due}{now}"), ctx)


def _run_long(ctx: RunContext, after: float) -> None:
    run = ctx.run
    running = [s.name for s in list(run.steps.values()) if s.status in (RUNNING, RETRYING)]
    now = f"; running: {', '.join(running)}" if running else ""
    send(alert_for("run_long", run, ctx.workflow, ctx.notify,
                   message=f"run {run.run_id} is still running after "
                           f"{format_duration(after)}{now}"), ctx)


@hookimpl
def flowsh_step_retrying(ctx: RunContext, step: StepRecord, delay: float) -> None:
    msg = (f"{_describe_failure(step)} on attempt {step.attempts}; "
           f"retrying in {format_duration(delay)}")
    send(alert_for("step_retry", ctx.run, ctx.workflow, ctx.notify, step=step, message=msg), ctx)


@hookimpl
def flowsh_step_finished(ctx: RunContext, step: StepRecord) -> None:
    if step.status != FAILED:
        return
    send(alert_for("step_failed", ctx.run, ctx.workflow, ctx.notify, step=step,
                   message=_describe_failure(step)), ctx)


@hookimpl
def flowsh_run_finished(ctx: RunContext) -> None:
    run, workflow = ctx.run, ctx.workflow
    for key in ("timer", "late_timer"):
        timer = ctx.slot("alerts").pop(key, None)
        if timer is not None:
            timer.cancel()
            timer.join()  # a run_long/run_late alert being sent goes out before the last word
    if run.status == SUCCEEDED:
        send(alert_for("run_succeeded", run, workflow, ctx.notify,
                       message=f"run {run.run_id} succeeded"), ctx)
        wait_sent(ctx)
        return
    if run.status not in (FAILED, INTERRUPTED, CRASHED):
        wait_sent(ctx)
        return
    failed = _failed_step(run, workflow)
    what = "was interrupted" if run.status == INTERRUPTED else "failed"
    msg = f"run {run.run_id} {what}" + (f": {_describe_failure(failed)}" if failed else "")
    alert = alert_for("run_failed", run, workflow, ctx.notify, step=failed, message=msg)
    if alert is not None:
        alert.duration = run.duration  # the run's, not the failed step's
        if failed is None:
            alert.exit_code = run.exit_code
    send(alert, ctx)
    wait_sent(ctx)
