"""A run's record at its start: a new one, or a crashed or failed one taken up again.

Before anything runs, what a runner killed with -9 left behind is stopped: a step that
ran on would run twice alongside its re-run (docs/semantics.md, RESUME statements).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from flowsh import placed, plugins
from flowsh.digest import sha256
from flowsh.errors import UsageError
from flowsh.executor import Executor
from flowsh.graph import Graph
from flowsh.model import Workflow, definition_json
from flowsh.secrets import MASK
from flowsh.state import (
    CRASHED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    RunRecord,
    SkipReason,
    StateBackend,
    StepRecord,
    instance_parent,
)
from flowsh.store import check_liveness
from flowsh.survivors import stop_leftovers, stop_orphan


def _host() -> str:
    # gethostname(2) is uname's nodename on Linux: the same name, without importing
    # socket (1.7 ms of every run's start).
    return os.uname().nodename


def new_run_id() -> str:
    # os.urandom, not `random`: tests (hypothesis) seed the global generator. 32 bits: a
    # wrapper started hundreds of times a second must not meet itself.
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{os.urandom(4).hex()}"


def definition_hash(wf: Workflow) -> str:
    data = definition_json(wf)
    return sha256(data.encode()).hexdigest()[:16]


def new_run(backend: StateBackend, wf: Workflow, run_id: str,
            params: dict[str, str], executor: Executor | None = None, *,
            scheduled_time: str | None = None) -> RunRecord:
    """Record a new run, after stopping what crashed runs of the workflow left running."""
    stop_crashed_runs(backend, wf, executor)
    run = RunRecord(
        run_id=run_id,
        workflow=wf.identity,
        file=wf.path,
        definition_hash=definition_hash(wf),
        params=params,
        pid=os.getpid(),
        host=_host(),
        started_at=time.time(),
        steps={s.name: StepRecord(name=s.name) for s in wf.steps},
        step_names=[s.name for s in wf.steps],
        scheduled_time=scheduled_time,
    )
    backend.create_run(run)
    return run


def steps_again(wf: Workflow, graph: Graph, prior: RunRecord,
                only: set[str] | None) -> set[str]:
    """The steps a resume of `prior` runs (RESUME-1). Without `only`, every step that did
    not succeed, and an `always` step that succeeded only when a step upstream of it runs
    again (it is the `finally` of what it follows; one whose needs all stay succeeded is
    kept); with `only` (flowsh retry), exactly those steps, whatever they were, and the
    steps the run left out of its selection."""
    if only is not None:
        return {n for n in graph.names if n in only or _not_selected(prior.steps.get(n))}
    steps = {s.name: s for s in wf.steps}
    again: set[str] = set()
    touched: set[str] = set()  # runs again, or is downstream of a step that does
    for name in graph.order:
        rec = prior.steps.get(name)
        upstream = any(d in touched for d in graph.needs[name])
        if rec is None or rec.status != SUCCEEDED or (steps[name].always and upstream):
            again.add(name)
        if upstream or name in again:
            touched.add(name)
    return again


def take_up(backend: StateBackend, wf: Workflow, prior: RunRecord, graph: Graph,
            params: dict[str, str], only: set[str] | None,
            executor: Executor | None = None) -> RunRecord:
    """`prior`, running again: the steps `steps_again` names start afresh."""
    stop_orphans(wf, prior, executor=executor)
    steps = {s.name: s for s in wf.steps}
    run = prior
    run.status = RUNNING
    run.pid, run.host = os.getpid(), _host()
    run.ended_at = run.exit_code = None
    run.params = params
    run.definition_hash = definition_hash(wf)
    run.step_names = [s.name for s in wf.steps]
    again = steps_again(wf, graph, prior, only)
    for name in graph.names:
        rec = run.steps.get(name)
        if rec is None or name in again:
            run.steps[name] = StepRecord(
                name=name, attempts=rec.attempts if rec else 0,
                log_path=rec.log_path if rec else None,
                # CALL-5: a resume goes on with the same child run; a retry starts anew.
                child_run=rec.child_run if rec and only is None else None,
                # FOREACH-3: the items as first expanded, whoever runs the step again.
                items=rec.items if rec and steps[name].foreach is not None else None)
    for name in list(run.steps):
        parent = instance_parent(name)
        if parent is None:
            if name not in steps:
                del run.steps[name]
            continue
        rec = run.steps[name]
        if parent not in steps or steps[parent].foreach is None:
            del run.steps[name]  # an instance of a step that is no longer a foreach
        elif parent in again and (only is not None or rec.status != SUCCEEDED):
            # FOREACH-6: a resume runs again the items that did not succeed; a retry, all.
            run.steps[name] = StepRecord(name=name, attempts=rec.attempts,
                                         log_path=rec.log_path)
    backend.update_run(run)
    for rec in run.steps.values():
        if rec.status == PENDING:
            backend.save_step(run, rec)
    return run


def _not_selected(rec: StepRecord | None) -> bool:
    return rec is not None and rec.skip_reason == SkipReason.NOT_SELECTED


def stop_crashed_runs(backend: StateBackend, wf: Workflow,
                      executor: Executor | None = None) -> None:
    """A new run of this identity must not overlap what a runner killed with -9 left
    running (the lock died with it): such runs are marked crashed and their steps
    stopped first, as a resume would (flowsh wrap from cron is always a new run)."""
    # Crashed ones too: `--resume` may have marked the run crashed, then chosen to start
    # afresh (a cron tick whose file lost a step), with the dead runner's steps running.
    for old in backend.list_runs(wf.identity, limit=5, statuses=frozenset({RUNNING, CRASHED})):
        run = check_liveness(backend, old)
        if run.status != RUNNING:
            if not run.steps:
                run = backend.load_run(run.run_id)
            stop_orphans(wf, run, new_run=True, executor=executor)


def stop_orphans(wf: Workflow, prior: RunRecord, *, new_run: bool = False,
                 executor: Executor | None = None) -> None:
    """Steps a crashed runner left running would run twice alongside their re-run: on
    other hosts (a remote executor's attempts, from any host), then on this one."""
    if executor is not None:
        for line in placed.stop_remote(executor, prior, wf.kill_grace):
            plugins.warn(line)
    if prior.host != _host():
        return
    for rec in prior.steps.values():
        if rec.pid and stop_orphan(rec.pid, prior.run_id, wf.kill_grace):
            again = "starting a new run" if new_run else "running it again"
            plugins.warn(f"step {rec.name!r} of crashed run {prior.run_id} was still "
                         f"running (pid {rec.pid}); stopped it before {again}")
        rec.pid = None
    if prior.status not in (RUNNING, CRASHED):
        return  # it ended properly: what is left was kept on purpose (keep_children)
    left = stop_leftovers(prior.run_id, wf.kill_grace)
    if left:
        plugins.warn(f"crashed run {prior.run_id} had {len(left)} process(es) it had not "
                     f"recorded still running (pid {', '.join(map(str, sorted(left)))}); "
                     "stopped them")


def refuse_lost_secrets(wf: Workflow, graph: Graph, prior: RunRecord, only: set[str] | None,
                        unmask: Callable[[str, dict[str, str]], dict[str, str]]) -> None:
    """A step kept as succeeded whose secret output is no longer kept (dropped once the run
    succeeded; never on another host) cannot hand it on: refuse before anything runs rather
    than hand a step the mask (SECRET-2). `unmask(step, outputs)` puts back what is kept."""
    again = steps_again(wf, graph, prior, None) if only is None else only
    for name in graph.order:
        rec = prior.steps.get(name)
        if rec is None or rec.status != SUCCEEDED or name in again:
            continue
        lost = sorted(k for k, v in unmask(name, rec.outputs).items() if v == MASK)
        if lost and any(d in again for d in graph.descendants([name]) - {name}):
            raise UsageError(
                f"step {name!r} output {', '.join(lost)} held a secret, which is no "
                f"longer kept for run {prior.run_id} (gone once a run succeeds, and "
                "never on another host); the steps after it would get "
                f"{MASK!r}: flowsh retry {prior.run_id} --step {name} --downstream "
                "runs them again with the real value")
