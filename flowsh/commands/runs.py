"""Built-in commands that read the record of runs: status, history, logs, prune."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from flowsh import hookimpl
from flowsh.durations import format_duration
from flowsh.errors import NotFoundError, UsageError
from flowsh.state import RUNNING, RunRecord, StateBackend, StepRecord, display_order


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _took(run_or_step: object) -> str:
    d = getattr(run_or_step, "duration", None)
    return format_duration(d) if d is not None else "-"


def _workflow_key(ref: str | None) -> str | None:
    """A workflow as runs are recorded: its identity as `history` shows it, or its file."""
    if ref is not None and Path(ref).is_file():
        from flowsh.loader import load_workflow

        return load_workflow(ref).identity
    return ref


def identities_named(backend: StateBackend, name: str) -> list[str]:
    """Recorded identities of workflows named `name` without a `name:` (`name-1a2b3c4d`),
    for a hint when the bare name finds nothing."""
    import re

    pattern = re.compile(rf"^{re.escape(name)}-[0-9a-f]{{8}}$")
    runs = backend.list_runs(None)
    return sorted({r.workflow for r in runs if pattern.match(r.workflow)})


def status_cmd(
    run_id: Optional[str] = typer.Argument(None, help="Run id or prefix; default: the latest."),  # noqa: UP045
    workflow: Optional[str] = typer.Option(None, "--workflow", "-w", help="Latest run of this workflow."),  # noqa: UP045,E501
    json_out: bool = typer.Option(False, "--json"),
    state: Optional[str] = typer.Option(None, "--state", envvar="FLOWSH_STATE"),  # noqa: UP045
) -> None:
    """Show a run: each step with its state, attempts, duration and exit code.

    For a failed run: each failed step's last log lines and the command to resume it.
    """
    from flowsh.store import check_liveness, open_existing, state_url

    backend = open_existing(state)  # reading must not create a store
    if backend is None:
        if run_id is not None:
            raise NotFoundError(f"no run {run_id!r} in {state_url(state)}")
        raise NotFoundError("no runs recorded yet" + (f" for {workflow}" if workflow else ""))
    try:
        if run_id is None:
            latest = backend.list_runs(_workflow_key(workflow), limit=1)
            if not latest:
                suffix = f" for {workflow}" if workflow else ""
                raise NotFoundError(f"no runs recorded yet{suffix}")
            run_id = latest[0].run_id
        run = check_liveness(backend, backend.load_run(run_id), read_only=True)
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
    if run.scheduled_time:
        typer.echo(f"slot     {run.scheduled_time}")
    if run.params:
        typer.echo("params   " + " ".join(f"{k}={v}" for k, v in run.params.items()))
    if run.parent_run:  # a child run (`call:`): what called it
        typer.echo(f"parent   {run.parent_run} (step {run.parent_step})")
    typer.echo("")
    width = max([len(n) for n in run.steps] + [4])
    typer.echo(f"{'STEP':<{width}}  {'STATUS':<11} {'TRIES':>5} {'TOOK':>8} {'EXIT':>5}  NOTE")
    for name in display_order(run):
        rec = run.steps[name]
        code = "-" if rec.exit_code is None else str(rec.exit_code)
        child = f"child run {rec.child_run}" if rec.child_run else None
        note = "; ".join(x for x in (rec.message, _where(rec), child) if x)
        typer.echo(f"{rec.name:<{width}}  {rec.status:<11} {rec.attempts:>5} {_took(rec):>8} "
                   f"{code:>5}  {note}")
    for line in failure_details(run, state):
        typer.echo(line)


def _where(rec: StepRecord) -> str:
    """A remote attempt: the worker it ran on and how long it waited for it (TOOK is the
    run time on the worker)."""
    if rec.task_id is None:
        return ""
    if rec.worker is None:
        return f"queued on {rec.queue} (task {rec.task_id[:8]})"
    wait = rec.queue_wait
    waited = f", queued {format_duration(wait)}" if wait is not None else ""
    return f"on {rec.worker} via {rec.queue}{waited}"


TAIL_LINES = 20
TAIL_STEPS = 5  # a run with 50 failed steps shows five; the others are one command away
LINE_CHARS = 500  # a log line can be megabytes (a progress bar, minified JSON)


def _printable(line: str) -> str:
    """A log line safe to put on a terminal: control characters (escape sequences that
    would clear the screen or retitle the window, a lone CR, NUL) shown as \\xNN, and
    a huge line cut, saying how much is left out."""
    text = "".join(c if c == "\t" or c.isprintable() else f"\\x{ord(c):02x}"
                   if ord(c) < 0x100 else "\ufffd" for c in line[:LINE_CHARS])
    if len(line) > LINE_CHARS:
        text += f" …[cut at {LINE_CHARS} characters]"
    return text


def shown_tail(path: str, count: int = TAIL_LINES) -> list[str] | None:
    """The last `count` lines of a log, read from its end (a log may be gigabytes); None
    when the log cannot be read (deleted, pruned)."""
    import os

    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - 256 * 1024))
            data = fh.read()
    except OSError:
        return None
    # Lines end at \n only: a \r inside one (a progress bar) is data, shown escaped.
    lines = data.decode(errors="replace").split("\n")
    if lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start another
    return [_printable(ln) for ln in lines[-count:]]


def failure_details(run: RunRecord, state: str | None) -> list[str]:
    """For a run that did not finish well: each failed step's last log lines, then the
    exact command that resumes it — so one command shows why and what to do next."""
    import os
    import shlex

    from flowsh.state import CRASHED, FAILED, INTERRUPTED

    if run.status not in (FAILED, INTERRUPTED, CRASHED):
        return []
    out: list[str] = []
    failed = [rec for rec in run.steps.values()
              if rec.status in (FAILED, INTERRUPTED) and rec.log_path]
    for rec in failed[:TAIL_STEPS]:
        assert rec.log_path is not None
        lines = shown_tail(rec.log_path)
        out.append("")
        if lines is None:
            # A log is created at a step's first output: with its run's directory still
            # there, a missing one most likely means the step printed nothing.
            why = ("the step printed nothing, or the log was deleted"
                   if os.path.isdir(os.path.dirname(rec.log_path)) else "deleted or pruned")
            out.append(f"{rec.name}: no log at {rec.log_path} ({why})")
            continue
        if not lines:
            out.append(f"{rec.name}: no output (log {rec.log_path})")
            continue
        out.append(f"{rec.name}: last {len(lines)} line(s) of {rec.log_path}")
        out.extend(f"  | {ln}" for ln in lines)
    if len(failed) > TAIL_STEPS:
        out.append("")
        out.append(f"... and {len(failed) - TAIL_STEPS} more failed step(s): "
                   f"flowsh logs {run.run_id} STEP")
    out.append("")
    if run.file:
        # --state only when it is not what the environment already says; never with a
        # database password in it (a PostgreSQL backend took it out of FLOWSH_STATE).
        from flowsh.secrets import url_without_password

        shown = url_without_password(state) if state else None
        where = (f" --state {shlex.quote(shown)}"
                 if shown and shown != url_without_password(os.environ.get("FLOWSH_STATE", ""))
                 else "")
        out.append(f"resume:  flowsh resume {run.run_id}{where}")
    else:
        out.append("resume:  this run has no workflow file (flowsh wrap): run the command again")
    return out


def history_cmd(
    workflow: Optional[str] = typer.Argument(None, help="Only this workflow (as listed, or its file)."),  # noqa: UP045,E501
    limit: int = typer.Option(20, "--limit", "-n", help="How many runs, newest first."),
    json_out: bool = typer.Option(False, "--json"),
    state: Optional[str] = typer.Option(None, "--state", envvar="FLOWSH_STATE"),  # noqa: UP045
) -> None:
    """List past runs, newest first."""
    from flowsh.store import check_liveness, open_backend, open_existing

    backend = open_existing(state)  # reading must not create a store
    runs = []
    if backend is not None:
        try:
            runs = [check_liveness(backend, r, read_only=True)
                    for r in backend.list_runs(_workflow_key(workflow), limit=limit)]
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
        if workflow and backend is not None:
            backend = open_backend(state)
            try:
                named = identities_named(backend, workflow)
            finally:
                backend.close()
            if named:
                typer.echo(f"(workflows named {workflow} are recorded by file: "
                           f"{', '.join(named)}; or pass the workflow file)", err=True)
        return
    rid = max([len(r.run_id) for r in runs] + [3])
    wfw = max([len(r.workflow) for r in runs] + [8])
    # The slot column only when a run has one (SLOT-6): unscheduled history reads as before.
    slots = any(r.scheduled_time for r in runs)
    typer.echo(f"{'RUN':<{rid}} {'WORKFLOW':<{wfw}} {'STATUS':<11} {'STARTED':<19} "
               f"{'TOOK':>8} EXIT" + ("  SLOT" if slots else ""))
    # Sub-workflow links, both ways; a retried call step has several children, and the
    # newest (runs come newest first) is the one its step records now.
    calls: dict[str, RunRecord] = {}
    for r in runs:
        if r.parent_run:
            calls.setdefault(r.parent_run, r)
    for r in runs:
        code = "-" if r.exit_code is None else str(r.exit_code)
        slot = f"{code:<4}  {r.scheduled_time or '-'}" if slots else code
        link = (f"  <- {r.parent_run} ({r.parent_step})" if r.parent_run else
                f"  -> {calls[r.run_id].run_id} ({calls[r.run_id].parent_step})"
                if r.run_id in calls else "")
        typer.echo(f"{r.run_id:<{rid}} {r.workflow:<{wfw}} {r.status:<11} "
                   f"{_when(r.started_at):<19} {_took(r):>8} {slot}{link}")


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
            if not follow or run.status != RUNNING:
                break
            time.sleep(0.5)
            # A runner killed with -9 never writes its end: the liveness check marks it
            # crashed, and following stops (it waited for ever).
            run = _alive_or_crashed(backend, backend.load_run(run.run_id))
    finally:
        backend.close()


def _alive_or_crashed(backend: StateBackend, run: RunRecord) -> RunRecord:
    from flowsh.store import check_liveness

    return check_liveness(backend, run, read_only=True)


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
        runs = backend.list_runs(_workflow_key(workflow))
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
