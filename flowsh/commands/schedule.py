"""`flowsh schedule add/list/remove` and `flowsh scheduler run`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from flowsh import hookimpl
from flowsh.errors import UsageError

schedule_app = typer.Typer(
    help="Install workflows in cron or systemd timers.", no_args_is_help=True
)
scheduler_app = typer.Typer(help="flowsh's own foreground scheduler.", no_args_is_help=True)

SchedulerOpt = Annotated[
    str, typer.Option("--scheduler", "-s", help="crontab (default) or systemd, or a plugin's.")
]


def get_scheduler(name: str) -> Any:
    from flowsh import plugins

    found = plugins.registry("schedulers")
    if name not in found:
        known = ", ".join(sorted(found)) or "none"
        raise UsageError(f"unknown scheduler {name!r} (known: {known})")
    return found[name]()


@schedule_app.command("add")
def add(
    file: Annotated[Path, typer.Argument(help="The workflow file.")],
    cron: Annotated[
        list[str] | None,
        typer.Option("--cron", help="Cron expression(s); default: the file's `schedule`."),
    ] = None,
    scheduler: SchedulerOpt = "crontab",
    script: Annotated[
        Path | None, typer.Option("--script", help="Schedule this exported script instead.")
    ] = None,
    path_from_env: Annotated[
        bool, typer.Option("--path-from-env", help="Write your PATH (deduplicated) into the "
                           "entry instead of /usr/local/bin:/usr/bin:/bin.")
    ] = False,
) -> None:
    """Schedule a workflow (adding it twice keeps one entry).

    The entry is named after the workflow's identity: its `name:`, else the file's stem
    and a hash of its path (backup-1a2b3c4d), so two files called backup.yaml get two
    entries. The crontab line runs `flowsh run FILE --resume --quiet-on-success --log LOG`:
    silent unless the run fails (so MAILTO mails failures only), the full output kept in
    LOG ($FLOWSH_HOME/cron/ID.log), an unfinished run resumed, a lock skip silent (exit
    75). A workflow with a parameter that has no default is refused: nothing passes it.
    See docs/scheduling.md.
    """
    import os

    from flowsh.cron import parse
    from flowsh.loader import load_workflow
    from flowsh.schedjob import schedule_name

    wf = load_workflow(file)
    for text in cron or ():
        try:
            parse(text)
        except ValueError as exc:
            raise UsageError(f"--cron: {exc}") from None
    extra = {"path": os.environ.get("PATH", "")} if path_from_env else {}
    changed = get_scheduler(scheduler).add(wf, cron or None,
                                           script=str(script) if script else None, **extra)
    state = "scheduled" if changed else "already scheduled, unchanged"
    typer.echo(f"{schedule_name(wf)}: {state} ({scheduler})")


@schedule_app.command("list")
def list_(
    scheduler: SchedulerOpt = "crontab",
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """List the workflows flowsh scheduled."""
    entries = get_scheduler(scheduler).list()
    if as_json:
        typer.echo(json.dumps([e.__dict__ for e in entries], indent=2))
        return
    for e in entries:
        typer.echo(f"{e.name}\t{' | '.join(e.exprs)}\t{e.source}")


@schedule_app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(
        help="The entry's name as `schedule list` shows it, the workflow file, or the "
        "workflow's bare name when only one entry has it.")],
    scheduler: SchedulerOpt = "crontab",
) -> None:
    """Remove a workflow's entry; every other line stays as it was."""
    get_scheduler(scheduler).remove(name)
    typer.echo(f"{name}: unscheduled ({scheduler})")


@schedule_app.command("catchup")
def catchup(
    file: Annotated[Path, typer.Argument(help="The workflow file (with `schedule` and "
                                         "`catchup`).")],
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Print the slots it "
                                          "would run; run nothing.")] = False,
    state: Annotated[str | None, typer.Option("--state", envvar="FLOWSH_STATE",
                                              help="State URL.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No output unless a run "
                                        "fails.")] = False,
) -> None:
    """Run, by hand, the slots of the `catchup` window that have no succeeded run.

    The window ends at the latest slot (included: no scheduled run is about to stand
    for it); `policy` picks them (latest: the newest missed; all: every one, oldest
    first). Each runs with its own FLOWSH_SCHEDULED_TIME, under the overlap lock.
    """
    from flowsh.catchup import current_slot, missed, options_for
    from flowsh.checks import check_workflow
    from flowsh.engine import run_series
    from flowsh.loader import load_workflow
    from flowsh.slot import format_time, now
    from flowsh.state import SUCCEEDED
    from flowsh.store import open_backend

    wf = load_workflow(file)
    if wf.catchup is None:
        raise UsageError(f"{wf.path}: no `catchup` in the workflow (catchup: {{window: 2d, "
                         "policy: all}})")
    check_workflow(wf)
    texts = list(wf.schedule)
    slot = current_slot(texts, now())
    how = f"window {_dur(wf.catchup.window)}, policy {wf.catchup.policy}"
    if dry_run:
        backend = open_backend(state or wf.state)
        try:
            todo = missed(wf, backend, texts, slot, include_slot=True)
        finally:
            backend.close()
        if not todo:
            typer.echo(f"{wf.name}: nothing to catch up ({how})")
        for t in todo:
            typer.echo(f"would run {wf.name} for slot {format_time(t)}")
        return
    from flowsh.plugins import make_reporter
    from flowsh.runopts import RunOptions
    from flowsh.ui import reporter_kind

    opts = RunOptions(state_url=state, reporter=make_reporter(
        reporter_kind(json_events=False, quiet=quiet), state))
    runs = run_series(wf, opts, lambda backend: [
        options_for(opts, t) for t in missed(wf, backend, texts, slot, include_slot=True)])
    if not runs:
        typer.echo(f"{wf.name}: nothing to catch up ({how})")
        return
    bad = next((r for r in runs if r.status != SUCCEEDED), None)
    raise typer.Exit(bad.exit_code or 1 if bad is not None else 0)


def _dur(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@scheduler_app.command("run")
def scheduler_run(
    files: Annotated[list[Path], typer.Argument(help="Workflow files with a `schedule`.")],
    misfire: Annotated[
        str, typer.Option("--misfire", help="A missed fire time: skip, or run-once.")
    ] = "skip",
    grace: Annotated[
        float, typer.Option("--grace", help="Seconds late before a fire time counts as missed.")
    ] = 1.0,
) -> None:
    """Run schedules in the foreground (for containers without cron); SIGTERM stops it."""
    from flowsh.loader import load_workflow
    from flowsh.scheduler import MISFIRE_POLICIES, SchedulerLoop

    if misfire not in MISFIRE_POLICIES:
        raise UsageError(f"--misfire must be one of {', '.join(MISFIRE_POLICIES)}")
    wfs = [load_workflow(f) for f in files]
    for wf in wfs:
        if not wf.schedule:
            raise UsageError(f"{wf.path}: no `schedule` in the workflow")
    raise typer.Exit(SchedulerLoop(wfs, misfire=misfire, grace=grace).run())


@hookimpl
def flowsh_register_commands(app: typer.Typer) -> None:
    app.add_typer(schedule_app, name="schedule")
    app.add_typer(scheduler_app, name="scheduler")
