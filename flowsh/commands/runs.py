"""Built-in commands that read the record of runs: status, history, logs, prune."""

from __future__ import annotations

import json
import shutil
import sys
import time
from typing import Optional

import typer

from flowsh import hookimpl
from flowsh.durations import format_duration
from flowsh.errors import NotFoundError, UsageError
from flowsh.state import RunRecord


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _took(run_or_step: object) -> str:
    d = getattr(run_or_step, "duration", None)
    return format_duration(d) if d is not None else "-"


def status_cmd(
    run_id: Optional[str] = typer.Argument(None, help="Run id or prefix; default: the latest."),  # noqa: UP045
    workflow: Optional[str] = typer.Option(None, "--workflow", "-w", help="Latest run of this workflow."),  # noqa: UP045,E501
    json_out: bool = typer.Option(False, "--json"),
    state: Optional[str] = typer.Option(None, "--state", envvar="FLOWSH_STATE"),  # noqa: UP045
) -> None:
    """Show a run: each step with its state, attempts, duration and exit code."""
    from flowsh.store import check_liveness, open_backend

    backend = open_backend(state)
    try:
        if run_id is None:
            latest = backend.list_runs(workflow, limit=1)
            if not latest:
                suffix = f" for {workflow}" if workflow else ""
                raise NotFoundError(f"no runs recorded yet{suffix}")
            run_id = latest[0].run_id
        run = check_liveness(backend, backend.load_run(run_id))
    finally:
        backend.close()
    if json_out:
        typer.echo(json.dumps(run.to_dict(), indent=2))
        return
    typer.echo(f"run      {run.run_id}")
    typer.echo(f"workflow {run.workflow}  ({run.file or '-'})")
    code = f" (exit {run.exit_code})" if run.exit_code is not None else ""
    typer.echo(f"status   {run.status}{code}")
    typer.echo(f"started  {_when(run.started_at)}   took {_took(run)}   "
               f"pid {run.pid} on {run.host}")
    if run.params:
        typer.echo("params   " + " ".join(f"{k}={v}" for k, v in run.params.items()))
    typer.echo("")
    width = max([len(n) for n in run.steps] + [4])
    typer.echo(f"{'STEP':<{width}}  {'STATUS':<11} {'TRIES':>5} {'TOOK':>8} {'EXIT':>5}  NOTE")
    for rec in run.steps.values():
        code = "-" if rec.exit_code is None else str(rec.exit_code)
        typer.echo(f"{rec.name:<{width}}  {rec.status:<11} {rec.attempts:>5} {_took(rec):>8} "
                   f"{code:>5}  {rec.message or ''}")


def history_cmd(
    workflow: Optional[str] = typer.Argument(None, help="Only this workflow."),  # noqa: UP045
    limit: int = typer.Option(20, "--limit", "-n", help="How many runs, newest first."),
    json_out: bool = typer.Option(False, "--json"),
    state: Optional[str] = typer.Option(None, "--state", envvar="FLOWSH_STATE"),  # noqa: UP045
) -> None:
    """List past runs, newest first."""
    from flowsh.store import check_liveness, open_backend

    backend = open_backend(state)
    try:
        runs = [check_liveness(backend, r) for r in backend.list_runs(workflow, limit=limit)]
    finally:
        backend.close()
    if json_out:
        out = []
        for r in runs:
            d = r.to_dict()
            d.pop("steps")
            d["duration"] = r.duration
            out.append(d)
        typer.echo(json.dumps(out, indent=2))
        return
    if not runs:
        typer.echo("no runs recorded", err=True)
        return
    rid = max([len(r.run_id) for r in runs] + [3])
    wfw = max([len(r.workflow) for r in runs] + [8])
    typer.echo(f"{'RUN':<{rid}} {'WORKFLOW':<{wfw}} {'STATUS':<11} {'STARTED':<19} "
               f"{'TOOK':>8} EXIT")
    for r in runs:
        code = "-" if r.exit_code is None else str(r.exit_code)
        typer.echo(f"{r.run_id:<{rid}} {r.workflow:<{wfw}} {r.status:<11} "
                   f"{_when(r.started_at):<19} {_took(r):>8} {code}")


def logs_cmd(
    run_id: str = typer.Argument(..., help="Run id or prefix."),
    step: Optional[str] = typer.Argument(None, help="One step; default: every step in order."),  # noqa: UP045
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing as the run writes."),
    state: Optional[str] = typer.Option(None, "--state", envvar="FLOWSH_STATE"),  # noqa: UP045
) -> None:
    """Print the output of a run's steps."""
    from flowsh.store import open_backend

    backend = open_backend(state)
    try:
        run = backend.load_run(run_id)
        if step is not None and step not in run.steps:
            raise NotFoundError(f"run {run.run_id} has no step {step!r}")
        names = [step] if step else list(run.steps)
        positions: dict[str, int] = {}
        last: list[str] = []  # the step whose lines were printed last
        while True:
            for name in names:
                rec = run.steps[name]
                if not rec.log_path:
                    continue
                _print_new(name, rec.log_path, positions, last, header=step is None)
            if not follow or run.status != "running":
                break
            time.sleep(0.5)
            run = backend.load_run(run.run_id)
    finally:
        backend.close()


def _print_new(name: str, path: str, positions: dict[str, int], last: list[str], *,
               header: bool) -> None:
    """Print what `path` gained since the last call; a ``==> step <==`` line on each switch."""
    try:
        with open(path, "rb") as fh:
            fh.seek(positions.get(name, 0))
            data = fh.read()
            positions[name] = fh.tell()
    except FileNotFoundError:
        return
    if not data:
        return
    if header and last != [name]:
        sys.stdout.write(f"==> {name} <==\n")
        sys.stdout.flush()  # the text layer's buffer first, then the bytes after it
        last[:] = [name]
    sys.stdout.buffer.write(data) if hasattr(sys.stdout, "buffer") else sys.stdout.write(
        data.decode("utf-8", "replace"))
    sys.stdout.flush()


def prune_cmd(
    keep: Optional[int] = typer.Option(None, "--keep", help="Keep the newest N runs per workflow."),  # noqa: UP045
    older_than: Optional[str] = typer.Option(None, "--older-than", help="Delete runs older than e.g. 30d."),  # noqa: UP045,E501
    workflow: Optional[str] = typer.Option(None, "--workflow", "-w"),  # noqa: UP045
    dry_run: bool = typer.Option(False, "--dry-run", "-n"),
    state: Optional[str] = typer.Option(None, "--state", envvar="FLOWSH_STATE"),  # noqa: UP045
) -> None:
    """Delete old runs and their logs. Running runs are never deleted.

    With both --keep and --older-than, a run goes only when it is beyond the newest N of
    its workflow and older than the duration.
    """
    from flowsh.durations import parse_duration
    from flowsh.state import RUNNING, flowsh_home
    from flowsh.store import open_backend

    if keep is None and older_than is None:
        raise UsageError("say what to delete: --keep N and/or --older-than DURATION")
    if keep is not None and keep < 0:
        raise UsageError("--keep must be 0 or more")
    try:
        cutoff = time.time() - parse_duration(older_than) if older_than else None
    except ValueError as exc:
        raise UsageError(f"--older-than: {exc}") from None
    backend = open_backend(state)
    try:
        runs = backend.list_runs(workflow)
        doomed: list[RunRecord] = []
        seen: dict[str, int] = {}
        for r in runs:  # newest first
            seen[r.workflow] = seen.get(r.workflow, 0) + 1
            if r.status == RUNNING:
                continue
            # Both given: a run goes only when it is beyond the newest N *and* old enough.
            beyond = keep is None or seen[r.workflow] > keep
            old = cutoff is None or r.started_at < cutoff
            if beyond and old:
                doomed.append(r)
        if not dry_run:
            backend.delete_runs([r.run_id for r in doomed])
            for r in doomed:
                shutil.rmtree(flowsh_home() / "runs" / r.run_id, ignore_errors=True)
    finally:
        backend.close()
    verb = "would delete" if dry_run else "deleted"
    typer.echo(f"{verb} {len(doomed)} run(s)")


@hookimpl
def flowsh_register_commands(app: typer.Typer) -> None:
    app.command("status")(status_cmd)
    app.command("history")(history_cmd)
    app.command("logs")(logs_cmd)
    app.command("prune")(prune_cmd)
