"""Built-in commands that load and run workflows: run, resume, retry, validate, graph, schema."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Optional

import typer

from flowsh import hookimpl
from flowsh.errors import EXIT_USAGE, FlowshError, LockHeldError, NotFoundError, UsageError

if TYPE_CHECKING:
    from flowsh.engine import RunOptions
    from flowsh.model import Workflow
    from flowsh.state import RunRecord

PARAMS_HELP = "Parameters as KEY=VALUE; they reach steps as environment variables."


def _run_options(
    *, params: list[str], jobs: int | None, quiet: bool, json_events: bool, state: str | None,
    overlap: str | None, lock_timeout: str | None, metrics_push: str | None,
) -> RunOptions:
    from flowsh.durations import parse_duration
    from flowsh.loader import parse_overrides
    from flowsh.plugins import make_reporter
    from flowsh.ui import reporter_kind

    if overlap is not None and overlap not in ("skip", "wait", "allow"):
        raise UsageError(f"--overlap {overlap!r}: use skip, wait or allow")
    if jobs is not None and jobs < 1:
        raise UsageError("-j/--jobs must be at least 1")
    try:
        lock_t = parse_duration(lock_timeout) if lock_timeout is not None else None
    except ValueError as exc:
        raise UsageError(f"--lock-timeout: {exc}") from None
    from flowsh.engine import RunOptions

    opts = RunOptions(
        params=parse_overrides(params),
        concurrency=jobs,
        state_url=state,
        reporter=make_reporter(reporter_kind(json_events=json_events, quiet=quiet), state),
        overlap=overlap,
        lock_timeout=lock_t,
        plugin_options={"metrics_push": metrics_push} if metrics_push else {},
    )
    return opts


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
    try:
        slot_args = (scheduled, scheduled_time, scheduled_cron or [])
        _run(file, params, jobs, dry_run, resume, quiet, json_events, state, overlap,
             lock_timeout, metrics_push, executor, quiet_on_success, skip_quietly, log,
             Selection(only or [], from_, until), slot_args, force=force,
             force_step=force_step or [])
    except FlowshError as exc:
        from flowsh.cronmode import log_refusal
        from flowsh.errors import LockHeldError

        # A refusal before or instead of the run (a bad file, a missing param, a resume
        # that cannot be done) is part of the transcript --log promises: at a cron tick
        # it was the one thing nobody saw (rt18 #2, #14). A lock skip logs its own line.
        # Not when the log itself (or --json beside it) was refused: then --log is no
        # transcript of anything.
        if (log is not None and not json_events and not isinstance(exc, LockHeldError)
                and not str(exc).startswith("--log ")):
            log_refusal(log, file, str(exc))
        raise


class Selection(NamedTuple):
    only: list[str]
    from_: str | None
    until: str | None

    def given(self) -> bool:
        return bool(self.only) or self.from_ is not None or self.until is not None


def _params_from_environment() -> list[str]:
    """Params handed over in FLOWSH_PARAMS_JSON (a JSON object of strings), as `flowsh
    serve` does: /proc/PID/environ is the user's own, where a command line is anyone's
    (`ps`), so a secret param never shows there. Taken out of the environment at once:
    steps never see it."""
    from flowsh.runopts import PARAMS_VAR

    raw = os.environ.pop(PARAMS_VAR, None)
    if raw is None:
        return []
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not all(
            isinstance(k, str) and k.isidentifier() and isinstance(v, str)
            for k, v in data.items()):
        raise UsageError(f"{PARAMS_VAR} must be a JSON object of names to strings")
    return [f"{k}={v}" for k, v in data.items()]


def _run(file: Path, params: list[str] | None, jobs: int | None, dry_run: bool, resume: bool,
         quiet: bool, json_events: bool, state: str | None, overlap: str | None,
         lock_timeout: str | None, metrics_push: str | None, executor: str | None,
         quiet_on_success: bool, skip_quietly: bool, log: Path | None,
         sel: Selection,
         slot_args: tuple[bool, str | None, list[str]] = (False, None, []), *,
         force: bool = False, force_step: list[str] | None = None) -> None:
    from flowsh.checks import check_workflow
    from flowsh.engine import run_workflow
    from flowsh.loader import load_workflow, parse_overrides
    from flowsh.steps import describe_plan

    params = [*_params_from_environment(), *(params or [])]
    wf = load_workflow(file)
    # The workflow lives as long as this process: out of the cycle collector's every later
    # pass (a 10,000-step model is ~100,000 containers to walk each time).
    import gc

    gc.freeze()
    texts, slot_at = _slot(wf, *slot_args)
    overrides = parse_overrides(params)
    prior = _latest_unfinished(wf, state) if resume and not dry_run else None
    # An unfinished run of another slot (SLOT-5): a scheduled tick finishes it first, then
    # runs its own slot; by hand (--scheduled-time) it is refused, as the script does.
    earlier = prior is not None and slot_at is not None and not _same_slot(prior, slot_at)
    if earlier and not texts:
        assert prior is not None and slot_at is not None
        from flowsh.slot import format_time

        raise UsageError(
            f"cannot resume {prior.run_id} for slot {format_time(slot_at)}: it stands for "
            f"{'slot ' + prior.scheduled_time if prior.scheduled_time else 'no slot'}; "
            "--resume alone finishes it, without --resume a new run starts for this slot")
    check_workflow(wf, overrides, given=prior.params if prior is not None else (),
                   executor=executor)
    selected = _select(wf, sel, resume)
    from flowsh.uptodate import force_names

    forced = force_names(wf, force_step or [])
    if dry_run:
        if selected is not None:
            _check_borrow(wf, selected, state)
        width = jobs or wf.concurrency
        from flowsh.ui import plural

        typer.echo(f"workflow {wf.name}: {plural(len(wf.steps), 'step')}, concurrency {width}")
        if wf.params or overrides:
            from flowsh.secrets import Masker

            merged = {**wf.params, **overrides}
            shown = Masker.for_env(merged, wf.secret_names()).mapping(merged, wf.secret_names())
            typer.echo("params: " + " ".join(f"{k}={v!r}" for k, v in shown.items()))
        if selected is not None:
            typer.echo("selected: " + ", ".join(s.name for s in wf.steps if s.name in selected))
        if slot_at is not None:
            from flowsh.slot import format_time

            typer.echo(f"scheduled time: {format_time(slot_at)}")
        # One write: echo per line (click flushes each) was ~25 ms of a 10,000-step plan.
        plan = "\n".join(describe_plan(wf, selected))
        if plan:
            typer.echo(plan)
        return
    opts = _run_options(params=params or [], jobs=jobs, quiet=quiet, json_events=json_events,
                        state=state, overlap=overlap, lock_timeout=lock_timeout,
                        metrics_push=metrics_push)
    opts.executor, opts.select = executor, selected
    if slot_at is not None:
        from flowsh.slot import format_time

        opts.scheduled_time = format_time(slot_at)
    opts.force, opts.force_steps = force, forced
    from flowsh.cronmode import CronOutput

    cron = CronOutput(quiet_on_success=quiet_on_success, skip_quietly=skip_quietly, log=log)
    if cron.active and json_events:
        # --json is a machine's stream of events; the transcript is for people: with both,
        # the log stayed empty and --quiet-on-success printed the events anyway.
        raise UsageError("--json does not combine with --log or --quiet-on-success")
    cron.check_log()  # an unwritable --log is refused before anything runs
    if cron.active:
        opts.reporter = cron.reporter()
    # The resume's warnings (a changed file) belong to the transcript, like the run's.
    with cron.lock_guard(wf.name):
        if prior is not None:
            # At a cron tick nobody can answer a refusal: every tick would exit 2 until
            # someone ran it by hand (rt18 #2). The admin changed the file on purpose, so
            # the scheduled run starts afresh, saying so in the transcript; the old run
            # stays resumable by hand.
            if cron.active and _gone_steps(prior, wf):
                sys.stderr.write(
                    f"flowsh: warning: cannot resume {prior.run_id}: step(s) "
                    f"{', '.join(_gone_steps(prior, wf))} no longer in {wf.path} (removed or "
                    f"renamed); starting a new run (`flowsh resume {prior.run_id} --force` "
                    "finishes the old one)\n")
                prior = None
            else:
                _check_resumable(prior, wf, force=False)
                opts.resume = prior
        if texts and slot_at is not None:
            runs, done_by = _series(wf, opts, texts, slot_at)
            if not runs and done_by is not None:
                # Another tick of this slot ran it while this one waited (SLOT-8).
                cron.nothing_to_do(wf.name, f"slot {opts.scheduled_time} already "
                                   f"succeeded in run {done_by}: nothing to do",
                                   err=json_events, quiet=quiet)
                return
            # The first that did not succeed decides the exit code and the transcript.
            run = next((r for r in runs if r.status != "succeeded"), runs[-1])
        else:
            run = run_workflow(wf, opts)
    cron.finish(run)
    _finish(run)


def _select(wf: Workflow, sel: Selection, resume: bool) -> set[str] | None:
    if not sel.given():
        return None
    if resume:  # a resumed run keeps the selection it started with
        raise UsageError("--resume continues a run with the steps it selected: it does not "
                         "combine with --only, --from or --until")
    from flowsh.graph import Graph
    from flowsh.select import choose

    return choose(wf, Graph.build(wf), only=sel.only, from_=sel.from_, until=sel.until)


def _check_borrow(wf: Workflow, selected: set[str], state: str | None) -> None:
    """`--dry-run` with a selection refuses what the run would refuse (SELECT-3/4): the
    outputs the steps left out must be found in the store."""
    from flowsh.graph import Graph
    from flowsh.secrets import load_secret_outputs
    from flowsh.select import selection
    from flowsh.state import flowsh_home
    from flowsh.store import open_backend

    def unmask(run_dir: Path, name: str, outputs: dict[str, str]) -> dict[str, str]:
        kept = load_secret_outputs(run_dir, name)
        return {**outputs, **{k: kept[k] for k in outputs if k in kept}}

    backend = open_backend(state)
    try:
        selection(backend, wf, Graph.build(wf), selected, None, None, unmask,
                  flowsh_home() / "runs")
    finally:
        backend.close()


def _slot(wf: Workflow, scheduled: bool, scheduled_time: str | None,
          crons: list[str]) -> tuple[list[str], Any]:
    from flowsh.slot import chosen

    return chosen(wf.schedule, scheduled=scheduled, scheduled_time=scheduled_time,
                  crons=crons, where=str(wf.path))


def _same_slot(run: RunRecord, slot_at: Any) -> bool:
    from flowsh.slot import same_slot

    return same_slot(run.scheduled_time, slot_at)


def _series(wf: Workflow, opts: RunOptions, texts: list[str],
            slot_at: Any) -> tuple[list[RunRecord], str | None]:
    """An unfinished run of an earlier slot taken up (SLOT-5) and the missed slots
    (CATCHUP-1), oldest first, then this slot's run unless a run of it already succeeded
    (SLOT-8; that run's id is returned): under one hold of the lock."""
    from flowsh.catchup import Tick
    from flowsh.engine import run_series

    tick = Tick(wf, opts, texts, slot_at)
    return run_series(wf, opts, tick), tick.done_by


def _latest_unfinished(wf: Workflow, state: str | None) -> RunRecord | None:
    """The run `--resume` continues: the latest of this workflow's identity, if unfinished.

    Runs recorded before identities carried a path hash were keyed on the bare name; such
    a run counts only when it was started from this same file (its record says which).
    """
    from flowsh.state import CRASHED, FAILED, INTERRUPTED, RUNNING
    from flowsh.store import check_liveness, open_backend

    backend = open_backend(state)
    try:
        runs = backend.list_runs(wf.identity, limit=20)
        if wf.identity != wf.name:
            legacy = [r for r in backend.list_runs(wf.name, limit=20) if r.file == wf.path]
            runs = sorted([*runs, *legacy], key=lambda r: r.started_at, reverse=True)
        for run in runs:
            run = check_liveness(backend, run)
            if run.status == RUNNING:
                continue  # alive: the overlap lock decides what happens
            if run.status in (FAILED, INTERRUPTED, CRASHED):
                return backend.load_run(run.run_id)
            return None  # the latest finished run succeeded: nothing to resume
        return None
    finally:
        backend.close()


def _gone_steps(run: RunRecord, wf: Workflow) -> list[str]:
    names = {s.name for s in wf.steps}
    return [n for n in run.step_names if n not in names]


def _check_resumable(run: RunRecord, wf: Workflow, *, force: bool) -> None:
    """Refuse a resume when steps the run recorded are gone from the file."""
    from flowsh.resume import definition_hash
    from flowsh.state import RUNNING, SUCCEEDED
    if run.status == RUNNING:  # 75, as `run --resume` and the exported script say it
        raise LockHeldError(f"run {run.run_id} is still running (pid {run.pid} on {run.host})")
    if run.status == SUCCEEDED:
        raise UsageError(f"run {run.run_id} succeeded; nothing to resume "
                         f"(use `flowsh retry {run.run_id} --step NAME` to run a step again)")
    gone = _gone_steps(run, wf)
    if gone and not force:
        # `flowsh run --resume` has no --force: name commands that exist.
        raise UsageError(
            f"cannot resume {run.run_id}: step(s) {', '.join(gone)} no longer in {wf.path} "
            f"(removed or renamed); `flowsh resume {run.run_id} --force` resumes anyway, "
            "a run without --resume starts afresh"
        )
    _refuse_steps_left_elsewhere(run, force=force)
    if definition_hash(wf) != run.definition_hash:
        sys.stderr.write(f"flowsh: warning: {wf.path} changed since run {run.run_id} started; "
                         "resuming with the current definition\n")


def _refuse_steps_left_elsewhere(run: RunRecord, *, force: bool) -> None:
    """A runner killed on host A may leave local steps running there; host B (sharing a
    PostgreSQL store) can neither see nor stop them, and would run them twice (REMOTE-3)."""
    import socket

    from flowsh.state import CRASHED, INTERRUPTED, RUNNING

    # Read as crashed before (any `status` or `history` does it): its running steps are
    # recorded interrupted (store.check_liveness), still with their pids.
    live = {RUNNING, INTERRUPTED} if run.status == CRASHED else {RUNNING}
    # A step recorded running without its pid was being started when the runner died: it
    # may run all the same.
    left = sorted(n for n, r in run.steps.items() if r.status in live and not r.task_id)
    if left and not force and run.host and run.host != socket.gethostname():
        raise LockHeldError(
            f"run {run.run_id}: step(s) {', '.join(left)} were running on host {run.host} "
            "when its runner died, and this host cannot stop them; resume it on "
            f"{run.host} (flowsh stops them there first) or, once sure they have ended, "
            f"`flowsh resume {run.run_id} --force`")


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
