"""Built-in commands that load and run workflows: run, resume, retry, validate, graph, schema."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from flowsh import hookimpl
from flowsh.errors import EXIT_USAGE, FlowshError, LockHeldError, NotFoundError, UsageError
from flowsh.runcmd import _check_resumable, _run_options, run_command

if TYPE_CHECKING:
    from flowsh.model import Workflow
    from flowsh.state import RunRecord

PARAMS_HELP = "Parameters as KEY=VALUE; they reach steps as environment variables."


def _finish(run: RunRecord) -> None:
    raise typer.Exit(run.exit_code or 0)


def run_cmd(
    file: Path = typer.Argument(..., help="Workflow file (YAML, TOML, or seed-style bash)."),
    params: Optional[list[str]] = typer.Argument(None, help=PARAMS_HELP),  # noqa: UP045
    jobs: Optional[int] = typer.Option(None, "-j", "--jobs", help="Override `concurrency`."),  # noqa: UP045
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Print the plan; run nothing."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the latest unfinished run of this workflow, if any."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No output unless the run fails."),
    json_events: bool = typer.Option(False, "--json", help="One JSON event per line on stdout."),
    state: Optional[str] = typer.Option(None, "--state", envvar="FLOWSH_STATE", help="State URL."),  # noqa: UP045
    overlap: Optional[str] = typer.Option(  # noqa: UP045
        None, "--overlap", help="If this workflow is already running: skip | wait | allow."
    ),
    lock_timeout: Optional[str] = typer.Option(None, "--lock-timeout", help="With wait: give up after this long."),  # noqa: UP045,E501
    metrics_push: Optional[str] = typer.Option(None, "--metrics-push", help="Pushgateway URL."),  # noqa: UP045
    executor: Optional[str] = typer.Option(  # noqa: UP045
        None, "--executor", help="Where steps run (default: the workflow's `executor`, local)."
    ),
    quiet_on_success: bool = typer.Option(False, "--quiet-on-success", help="Print the run's whole output only if it fails (chronic; for cron's MAILTO)."),  # noqa: E501
    skip_quietly: bool = typer.Option(False, "--skip-quietly", help="If another run holds the lock: exit 75 and print nothing (implied by --quiet-on-success)."),  # noqa: E501
    log: Optional[Path] = typer.Option(None, "--log", metavar="FILE", help="Also append the run's output to FILE, after a header line."),  # noqa: UP045,E501
    only: Optional[list[str]] = typer.Option(None, "--only", metavar="STEP[,STEP...]", help="Run just these steps (repeatable); the others are skipped as not selected."),  # noqa: UP045,E501
    from_: Optional[str] = typer.Option(None, "--from", metavar="STEP", help="Run STEP and everything downstream of it."),  # noqa: UP045,E501
    until: Optional[str] = typer.Option(None, "--until", metavar="STEP", help="Run STEP and everything upstream of it (with --from: the steps between)."),  # noqa: UP045,E501
    scheduled: bool = typer.Option(False, "--scheduled", help="Started by a schedule: the run stands for the latest fire time of `schedule` at or before now (FLOWSH_SCHEDULED_TIME), after `catchup`."),  # noqa: E501
    scheduled_time: Optional[str] = typer.Option(None, "--scheduled-time", metavar="T", help="The slot this run stands for, by hand (RFC 3339 with an offset)."),  # noqa: UP045,E501
    scheduled_cron: Optional[list[str]] = typer.Option(None, "--scheduled-cron", metavar="EXPR", help="With --scheduled: the entry's own cron expression(s) instead of the file's `schedule`."),  # noqa: UP045,E501
    force: bool = typer.Option(False, "--force", help="Run every step, even those up to date (steps with `sources:`)."),  # noqa: E501
    force_step: Optional[list[str]] = typer.Option(None, "--force-step", metavar="NAME", help="Run this step even if up to date (repeatable, or a comma list)."),  # noqa: UP045,E501
) -> None:
    """Run a workflow file, or part of it (--only, --from, --until).

    Steps left out of a selection are recorded as skipped ("not selected"); the outputs
    they hand on come from the latest successful run in which they succeeded.
    """
    code = run_command(file, params, jobs, dry_run, resume, quiet, json_events, state, overlap,
                       lock_timeout, metrics_push, executor, quiet_on_success, skip_quietly,
                       log, only, from_, until, scheduled, scheduled_time, scheduled_cron,
                       force, force_step)
    if code is not None:
        raise typer.Exit(code)


def _open_run(run_id: str, state: str | None) -> RunRecord:
    from flowsh.store import check_liveness, open_backend

    backend = open_backend(state)
    try:
        run = check_liveness(backend, backend.load_run(run_id))
    finally:
        backend.close()
    return run


def _workflow_for(run: RunRecord, file: Path | None) -> Workflow:
    from flowsh.loader import load_workflow
    path = file or (Path(run.file) if run.file else None)
    if path is None:
        raise UsageError(f"run {run.run_id} has no workflow file on record; pass --file")
    if not path.exists():
        raise NotFoundError(f"{path}: the workflow file of run {run.run_id} is gone; pass --file")
    return load_workflow(path)


def resume_cmd(
    run_id: str = typer.Argument(..., help="Run id (or a unique prefix)."),
    params: Optional[list[str]] = typer.Argument(None, help=PARAMS_HELP),  # noqa: UP045
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="Workflow file, if moved."),  # noqa: UP045
    force: bool = typer.Option(False, "--force", help="Resume even if steps were removed from the file, or were left running on another host (make sure they have ended)."),  # noqa: E501
    jobs: Optional[int] = typer.Option(None, "-j", "--jobs"),  # noqa: UP045
    quiet: bool = typer.Option(False, "--quiet", "-q"),
    json_events: bool = typer.Option(False, "--json"),
    state: Optional[str] = typer.Option(None, "--state", envvar="FLOWSH_STATE"),  # noqa: UP045
) -> None:
    """Continue a failed, interrupted or crashed run: succeeded steps are not run again."""
    from flowsh.checks import check_workflow
    from flowsh.engine import run_workflow
    from flowsh.loader import parse_overrides

    run = _open_run(run_id, state)
    wf = _workflow_for(run, file)
    check_workflow(wf, parse_overrides(params or []), given=run.params)
    _check_resumable(run, wf, force=force)
    opts = _run_options(params=params or [], jobs=jobs, quiet=quiet, json_events=json_events,
                        state=state, overlap=None, lock_timeout=None, metrics_push=None)
    opts.resume = run
    _finish(run_workflow(wf, opts))


def retry_cmd(
    run_id: str = typer.Argument(..., help="Run id (or a unique prefix)."),
    params: Optional[list[str]] = typer.Argument(  # noqa: UP045
        None, help="KEY=VALUE: a secret param the state does not keep, again."),
    step: list[str] = typer.Option(..., "--step", "-s", help="Step to run again (repeatable)."),
    downstream: bool = typer.Option(False, "--downstream", help="Also re-run what follows."),
    file: Optional[Path] = typer.Option(None, "--file", "-f"),  # noqa: UP045
    quiet: bool = typer.Option(False, "--quiet", "-q"),
    json_events: bool = typer.Option(False, "--json"),
    state: Optional[str] = typer.Option(None, "--state", envvar="FLOWSH_STATE"),  # noqa: UP045
) -> None:
    """Run one step of a finished run again (and, with --downstream, what follows it)."""
    from flowsh.checks import check_workflow
    from flowsh.engine import run_workflow
    from flowsh.graph import Graph
    from flowsh.loader import parse_overrides
    from flowsh.state import RUNNING

    run = _open_run(run_id, state)
    wf = _workflow_for(run, file)
    check_workflow(wf, parse_overrides(params or []), given=run.params)
    if run.status == RUNNING:  # 75, as resume says it
        raise LockHeldError(f"run {run.run_id} is still running (pid {run.pid})")
    names = {s.name for s in wf.steps}
    for s in step:
        if s not in names:
            raise NotFoundError(f"no step {s!r} in {wf.path}")
    only = set(step)
    if downstream:
        only |= Graph.build(wf).descendants(step)
    opts = _run_options(params=params or [], jobs=None, quiet=quiet, json_events=json_events,
                        state=state, overlap=None, lock_timeout=None, metrics_push=None)
    opts.resume, opts.only = run, only
    _finish(run_workflow(wf, opts))


def validate_cmd(
    files: list[Path] = typer.Argument(..., help="Workflow files to check."),
    json_out: bool = typer.Option(False, "--json", help="Results as JSON."),
) -> None:
    """Check workflow files without running anything."""
    from flowsh.checks import check_workflow
    from flowsh.libstate import check_states
    from flowsh.loader import load_workflow

    results = []
    bad = 0
    for f in files:
        try:
            wf = load_workflow(f)
            check_workflow(wf)
            check_states(wf)  # as a run does before any step (FILE-2, SOURCE-5)
        except FlowshError as exc:
            bad += 1
            results.append({"file": str(f), "ok": False, "error": str(exc)})
            if not json_out:
                sys.stderr.write(f"{exc}\n")
            continue
        schedule = _schedule_lines(wf)
        results.append({"file": str(f), "ok": True, "workflow": wf.name,
                        "steps": len(wf.steps), "schedule": schedule})
        if not json_out:
            from flowsh.ui import plural

            typer.echo(f"{f}: ok ({wf.name}, {plural(len(wf.steps), 'step')})")
            for line in schedule:
                typer.echo(f"  {line}")
    if json_out:
        typer.echo(json.dumps(results, indent=2))
    if bad:
        raise typer.Exit(EXIT_USAGE)


def _schedule_lines(wf: Workflow) -> list[str]:
    from flowsh.cron import describe_schedule

    return describe_schedule(wf)


def graph_cmd(
    file: Path = typer.Argument(..., help="Workflow file."),
    fmt: str = typer.Option("ascii", "--format", "-f", help="ascii | mermaid | dot"),
) -> None:
    """Draw the step graph."""
    from flowsh.graph import Graph
    from flowsh.loader import load_workflow

    if fmt not in ("ascii", "mermaid", "dot"):
        raise UsageError(f"--format {fmt!r}: use ascii, mermaid or dot")
    typer.echo(Graph.build(load_workflow(file)).render(fmt))


def schema_cmd() -> None:
    """Print the JSON Schema of workflow files (for editors)."""
    from flowsh.model import json_schema

    typer.echo(json.dumps(json_schema(), indent=2))


@hookimpl
def flowsh_register_commands(app: typer.Typer) -> None:
    app.command("run")(run_cmd)
    app.command("resume")(resume_cmd)
    app.command("retry")(retry_cmd)
    app.command("validate")(validate_cmd)
    app.command("graph")(graph_cmd)
    app.command("schema")(schema_cmd)
    app.command("call-child", hidden=True)(call_child_cmd)


def call_child_cmd() -> None:
    """What a `call:` step runs (flowsh/callrun.py); its input is the environment."""
    from flowsh.callrun import run_child

    raise typer.Exit(run_child())
