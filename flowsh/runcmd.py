"""`flowsh run`'s work, without typer: what `run` does once its arguments are parsed.

The typer command (commands/core.py) and the fast path of `flowsh run` (climain.py) both
call `run_command`; `resume` and `retry` share the helpers. Nothing here imports typer: a
plain `flowsh run FILE` starts without it (~30-40 ms of imports and a command tree).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from flowsh.errors import FlowshError, LockHeldError, UsageError

if TYPE_CHECKING:
    from flowsh.engine import RunOptions
    from flowsh.model import Workflow
    from flowsh.state import RunRecord

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



def run_command(file: Path, params: list[str] | None, jobs: int | None, dry_run: bool,
                resume: bool, quiet: bool, json_events: bool, state: str | None,
                overlap: str | None, lock_timeout: str | None, metrics_push: str | None,
                executor: str | None, quiet_on_success: bool, skip_quietly: bool,
                log: Path | None, only: list[str] | None, from_: str | None, until: str | None,
                scheduled: bool, scheduled_time: str | None,
                scheduled_cron: list[str] | None, force: bool,
                force_step: list[str] | None) -> int | None:
    """`flowsh run` with its parameters as typer hands them over; the exit code (None:
    nothing was run, exit 0)."""
    try:
        slot_args = (scheduled, scheduled_time, scheduled_cron or [])
        return _run(file, params, jobs, dry_run, resume, quiet, json_events, state, overlap,
                    lock_timeout, metrics_push, executor, quiet_on_success, skip_quietly, log,
                    Selection(only or [], from_, until), slot_args, force=force,
                    force_step=force_step or [])
    except FlowshError as exc:
        from flowsh.cronmode import log_refusal

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
         force: bool = False, force_step: list[str] | None = None) -> int | None:
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
    forced: set[str] = set()
    if force_step:
        from flowsh.uptodate import force_names

        forced = force_names(wf, force_step)
    if dry_run:
        # typer's echo (click's: it strips ANSI codes off a pipe), imported only for a plan.
        from typer import echo

        if selected is not None:
            _check_borrow(wf, selected, state)
        width = jobs or wf.concurrency
        from flowsh.ui import plural

        echo(f"workflow {wf.name}: {plural(len(wf.steps), 'step')}, concurrency {width}")
        if wf.params or overrides:
            from flowsh.secrets import Masker

            merged = {**wf.params, **overrides}
            shown = Masker.for_env(merged, wf.secret_names()).mapping(merged, wf.secret_names())
            echo("params: " + " ".join(f"{k}={v!r}" for k, v in shown.items()))
        if selected is not None:
            echo("selected: " + ", ".join(s.name for s in wf.steps if s.name in selected))
        if slot_at is not None:
            from flowsh.slot import format_time

            echo(f"scheduled time: {format_time(slot_at)}")
        # One write: echo per line (click flushes each) was ~25 ms of a 10,000-step plan.
        plan = "\n".join(describe_plan(wf, selected))
        if plan:
            echo(plan)
        return None
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
                return None
            # The first that did not succeed decides the exit code and the transcript.
            run = next((r for r in runs if r.status != "succeeded"), runs[-1])
        else:
            run = run_workflow(wf, opts)
    cron.finish(run)
    return run.exit_code or 0


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
    if scheduled_time is None and not (scheduled or crons):
        return [], None  # no slot, as `chosen` says, without slot.py's datetime and cron
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
