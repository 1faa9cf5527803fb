"""What the API and the pages show, read from the same state store and run directories as
the CLI: workflows, pages of runs, one run with its steps and attempts, a step's log.

Every function here is synchronous (the state backends are); the app calls them on a
worker thread. Each call opens its own backend: SQLite connections are per thread.
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from flowsh.errors import FlowshError, NotFoundError
from flowsh.model import Workflow
from flowsh.secrets import MASK, Masker
from flowsh.state import (
    FINISHED_RUN,
    RUNNING,
    SUCCEEDED,
    RunRecord,
    StateBackend,
    display_order,
    flowsh_home,
    instance_parent,
)
from flowsh.store import STALE_AFTER, check_liveness, open_backend

TREND_RUNS = 20  # runs behind a workflow's success rate and duration trend
LOG_TAIL_MAX = 5000


@dataclass
class Known:
    """Workflow files the server may start runs from: `--workflows` and recorded runs.
    A client names a workflow by identity, never by path (nothing it sends becomes a file
    name)."""

    dirs: list[Path]
    files: dict[str, Path] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # file -> why it does not load
    scanned: float = 0.0

    def scan(self, max_age: float = 5.0) -> None:
        if time.monotonic() - self.scanned < max_age:
            return
        from flowsh.loader import load_workflow

        files: dict[str, Path] = {}
        errors: dict[str, str] = {}
        for d in self.dirs:
            for path in sorted(d.glob("*")):
                if path.suffix not in (".yaml", ".yml", ".toml", ".sh") or not path.is_file():
                    continue
                try:
                    wf = load_workflow(path, execute=False)  # listed, not run
                except FlowshError as exc:
                    errors[str(path)] = str(exc)
                    continue
                files.setdefault(wf.identity, path.resolve())
        self.files, self.errors, self.scanned = files, errors, time.monotonic()


@contextmanager
def backend(url: str | None) -> Iterator[StateBackend]:
    b = open_backend(url)
    try:
        yield b
    finally:
        b.close()


def load_workflow_quietly(path: str | Path | None) -> Workflow | None:
    """The workflow at a path a run recorded, for display: parsed, never executed (a seed
    bash file is not sourced), so whoever can write that path cannot run code as the
    server's user by having someone look at a page. Only a start or resume (a separate
    `flowsh run|resume` process) evaluates a file."""
    if not path or not Path(path).is_file():
        return None
    try:
        from flowsh.loader import load_workflow

        return load_workflow(path, execute=False)
    except Exception:  # changed or broken since: shown without it
        return None


def next_fire(wf: Workflow | None) -> float | None:
    if wf is None or not wf.schedule:
        return None
    from flowsh.cron import next_times, parse

    times: list[datetime] = []
    for text in wf.schedule:
        try:
            times.extend(next_times(parse(text), None, 1))
        except Exception:  # an unparsable schedule is `validate`'s to report
            continue
    return min(t.timestamp() for t in times) if times else None


def workflow_names(b: StateBackend) -> list[str]:
    """Every recorded workflow identity. SQLite answers from its index; other backends by
    listing their runs."""
    distinct = getattr(b, "workflow_names", None)
    if callable(distinct):
        return list(distinct())
    return sorted({r.workflow for r in b.list_runs(None)})


def list_page(b: StateBackend, workflow: str | None, statuses: frozenset[str] | None,
              limit: int, offset: int) -> list[RunRecord]:
    """`limit` runs after `offset`, newest first; `offset` in SQL where the backend takes it."""
    if "offset" in inspect.signature(b.list_runs).parameters:
        return b.list_runs(workflow, limit=limit, statuses=statuses,
                           offset=offset)  # type: ignore[call-arg]
    return b.list_runs(workflow, limit=limit + offset, statuses=statuses)[offset:]


def run_summary(run: RunRecord) -> dict[str, Any]:
    return {
        "run_id": run.run_id, "workflow": run.workflow, "file": run.file,
        "status": run.status, "exit_code": run.exit_code, "started_at": run.started_at,
        "ended_at": run.ended_at, "duration": run.duration, "params": dict(run.params),
        "host": run.host, "pid": run.pid, "resumed_from": run.resumed_from,
        "parent_run": run.parent_run, "parent_step": run.parent_step,
    }


def workflow_summary(b: StateBackend, identity: str, file: Path | None) -> dict[str, Any]:
    recent = [check_liveness(b, r, read_only=True)
              for r in b.list_runs(identity, limit=TREND_RUNS)]
    finished = [r for r in recent if r.status in FINISHED_RUN]
    path = file or (Path(recent[0].file) if recent and recent[0].file else None)
    wf = load_workflow_quietly(path) if path else None
    last = recent[0] if recent else None
    return {
        "name": identity,
        "title": wf.name if wf else identity,
        "file": str(path) if path else None,
        "startable": file is not None,
        "schedule": list(wf.schedule) if wf else [],
        "next_run": next_fire(wf),
        "last_status": last.status if last else None,
        "last_run": last.run_id if last else None,
        "last_started": last.started_at if last else None,
        "last_duration": last.duration if last else None,
        "success_rate": (sum(r.status == SUCCEEDED for r in finished) / len(finished)
                         if finished else None),
        # Oldest first, for a sparkline of durations.
        "trend": [{"run_id": r.run_id, "status": r.status, "duration": r.duration}
                  for r in reversed(finished)],
        # A secret param's default is never served (SECRET-1): the form shows the mask.
        "params": ({**{k: MASK if k in wf.secret_names() else v for k, v in wf.params.items()},
                    **dict.fromkeys(wf.required_params, "")} if wf else {}),
        "required_params": list(wf.required_params) if wf else [],
    }


def workflows(url: str | None, known: Known) -> list[dict[str, Any]]:
    known.scan()
    with backend(url) as b:
        names = set(workflow_names(b)) | set(known.files)
        return [workflow_summary(b, n, known.files.get(n)) for n in sorted(names)]


def runs_page(url: str | None, workflow: str | None, status: str | None, limit: int,
              offset: int) -> dict[str, Any]:
    # `crashed` is recorded lazily (a dead runner's run says `running` until someone
    # looks): asking for either means looking at both.
    statuses = None
    if status is not None:
        statuses = frozenset({status, RUNNING} if status in ("crashed", RUNNING) else {status})
    with backend(url) as b:
        got = [check_liveness(b, r, read_only=True)
               for r in list_page(b, workflow, statuses, limit + 1, offset)]
    more = len(got) > limit
    runs = [run_summary(r) for r in got[:limit] if status is None or r.status == status]
    return {"runs": runs, "limit": limit, "offset": offset,
            "next_offset": offset + limit if more else None}


def load_run(url: str | None, run_id: str) -> RunRecord:
    with backend(url) as b:
        return check_liveness(b, b.load_run(run_id), read_only=True)


def runner_alive(url: str | None, run: RunRecord, *, heartbeat: bool = True) -> bool | None:
    """Whether the run's runner is alive, judged as `flowsh status` judges it
    (flowsh/store.py): the store's own lock where it has one (PostgreSQL: a runner on any
    host), else this host's lock file; None when neither can tell (another host's run on a
    store without locks) — then, for a running run, its heartbeat (unless `heartbeat` is
    False: a signal needs a lock's word that the pid is still that runner's)."""
    from flowsh.lock import runner_alive as lock_alive

    with backend(url) as b:
        alive = lock_alive(flowsh_home() / "runs" / run.run_id, b, run)
    if alive is None and heartbeat and run.status == RUNNING:
        alive = time.time() - (run.heartbeat or run.started_at) < STALE_AFTER
    return alive


def run_detail(run: RunRecord) -> dict[str, Any]:
    from flowsh.monitorfiles import events_path, read_events
    from flowsh.report import segments_from_events

    wf = load_workflow_quietly(run.file)
    events = read_events(events_path(wf), run.run_id)
    needs = {s.name: list(s.needs or ()) for s in wf.steps} if wf is not None else {}
    steps = []
    for name in step_order(run):
        rec = run.steps[name]
        steps.append({
            "name": name, "status": rec.status, "attempts": rec.attempts,
            "exit_code": rec.exit_code, "signal": rec.signal, "started_at": rec.started_at,
            "ended_at": rec.ended_at, "duration": rec.duration, "message": rec.message,
            "needs": needs.get(name, []) if (p := instance_parent(name)) is None else [p],
            "has_log": bool(rec.log_path), "child_run": rec.child_run,
            "attempt_spans": [{"attempt": s.attempt, "start": s.start, "end": s.end,
                               "status": s.status}
                              for s in segments_from_events(events, rec)],
        })
    return {**run_summary(run), "steps": steps}


def step_order(run: RunRecord) -> list[str]:
    """File order, each foreach step followed by its items (FOREACH-8)."""
    return display_order(run)


def log_path(run: RunRecord, step: str) -> Path | None:
    """The step's log, only if it lies inside the run's own directory: a record edited by
    hand (or another program) cannot make the server read /etc/shadow."""
    rec = run.steps.get(step)
    if rec is None:
        raise NotFoundError(f"run {run.run_id} has no step {step!r}")
    if not rec.log_path:
        return None
    own = (flowsh_home() / "runs" / run.run_id).resolve()
    path = Path(os.path.realpath(rec.log_path))
    # The run's own directory, and a log there: never its secret-outputs file.
    if path.parent != own or not path.name.endswith(".log"):
        return None
    return path


def masker_for(run: RunRecord) -> Masker:
    return Masker.for_workflow(load_workflow_quietly(run.file))


def log_tail(run: RunRecord, step: str, lines: int) -> dict[str, Any]:
    from flowsh.fileio import tail_lines

    path = log_path(run, step)
    got, cut = tail_lines(str(path), lines, 1024 * 1024) if path else ([], False)
    mask = masker_for(run)
    return {"run_id": run.run_id, "step": step, "status": run.steps[step].status,
            "lines": [mask(line) for line in got], "truncated": cut,
            "size": path.stat().st_size if path and path.exists() else 0}
