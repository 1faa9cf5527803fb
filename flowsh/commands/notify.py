"""``flowsh notify test CHANNEL FILE`` and ``flowsh notify send FILE --event ...``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from flowsh import hookimpl

if TYPE_CHECKING:
    from flowsh.model import Workflow

notify_app = typer.Typer(help="Send alerts through a workflow's notify channels.",
                         no_args_is_help=True)


def _load(file: Path) -> Workflow:
    from flowsh.loader import load_workflow
    from flowsh.notify import check_notify

    wf = load_workflow(file)
    check_notify(wf)
    return wf


@notify_app.command("test")
def notify_test(
    channel: str = typer.Argument(..., help="A channel name from notify.channels (or `log`)."),
    file: Path = typer.Argument(..., help="The workflow file declaring the channel."),
    severity: str = typer.Option("info", "--severity", "-s", help="critical, warning or info."),
) -> None:
    """Send a test alert to one channel and say whether it arrived."""
    from flowsh.errors import FlowshError
    from flowsh.notify import Alert, channel_config, dispatch, effective_notify
    from flowsh.secrets import Masker

    _check_severity(severity)
    wf = _load(file)
    notify = effective_notify(wf)
    channel_config(notify, channel)  # NotFoundError (exit 4) for an unknown name
    alert = Alert(severity=severity, event="test", workflow=wf.name, run_id="test",
                  message=f"Test alert from `flowsh notify test {channel}`.", file=wf.path)
    [outcome] = dispatch(alert, notify, masker=Masker.for_workflow(wf), channels=[channel],
                         quiet=True)
    if not outcome.ok:
        raise FlowshError(f"notify channel {channel!r}: {outcome.error}")
    typer.echo(f"sent a test alert to {channel}")


@notify_app.command("send")
def notify_send(
    file: Path = typer.Argument(..., help="The workflow file whose notify config routes it."),
    event: str = typer.Option(..., "--event", "-e",
                              help="run_failed, run_succeeded, step_failed, step_retry, "
                                   "run_long, run_late"),
    severity: str | None = typer.Option(None, "--severity", "-s",
                                        help="Default: the event's severity in notify.events."),
    message: str = typer.Option("", "--message", "-m"),
    run_id: str = typer.Option("-", "--run-id"),
    step: str | None = typer.Option(None, "--step"),
    exit_code: int | None = typer.Option(None, "--exit-code"),
    duration: float | None = typer.Option(None, "--duration", help="Seconds."),
    log: Path | None = typer.Option(None, "--log", help="A log file whose tail goes along."),
    channel: list[str] = typer.Option([], "--channel", "-c",
                                      help="Send to these channels instead of the route."),
) -> None:
    """Route one alert as a run would (used by exported bash scripts).

    Exits 0 when every channel took it (or the event is not routed), 1 when one failed.
    """
    from flowsh.errors import FlowshError, UsageError
    from flowsh.notify import EVENTS, Alert, dispatch, effective_notify, events_of, log_tail
    from flowsh.secrets import Masker

    if event not in EVENTS:
        raise UsageError(f"unknown event {event!r}; one of: {', '.join(EVENTS)}")
    wf = _load(file)
    notify = effective_notify(wf)
    sev = severity or events_of(notify).get(event)
    if sev is None:
        return  # not an alerting event for this workflow
    _check_severity(sev)
    alert = Alert(severity=sev, event=event, workflow=wf.name, run_id=run_id, step=step,
                  exit_code=exit_code, duration=duration,
                  log_tail=log_tail(str(log)) if log else "", message=message, file=wf.path)
    outcomes = dispatch(alert, notify, masker=Masker.for_workflow(wf), channels=channel or None)
    failed = [o.channel for o in outcomes if not o.ok]
    if failed:
        raise FlowshError(f"alert not delivered to: {', '.join(failed)}")


def _check_severity(severity: str) -> None:
    from flowsh.errors import UsageError
    from flowsh.notify import SEVERITIES

    if severity not in SEVERITIES:
        raise UsageError(f"unknown severity {severity!r}; one of: {', '.join(SEVERITIES)}")


@hookimpl
def flowsh_register_commands(app: typer.Typer) -> None:
    app.add_typer(notify_app, name="notify")
