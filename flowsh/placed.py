"""Where remote attempts run: the engine's side of `RemoteExecutor` (kept out of the
engine so that it only calls three functions).

An attempt sent to another host is recorded with its task id, queue, submission time and,
once a worker takes it, the worker and the time it started: `status` and the report show
where a step runs and how long it waited, and a resume after a crash can find it.
"""

from __future__ import annotations

from flowsh.errors import UsageError
from flowsh.executor import Executor, Placement
from flowsh.state import (
    CRASHED,
    FAILED,
    INTERRUPTED,
    SKIPPED,
    SUCCEEDED,
    RunRecord,
    StepRecord,
)

_DONE = frozenset({SUCCEEDED, FAILED, SKIPPED, INTERRUPTED})


def record(rec: StepRecord, where: Placement | None) -> bool:
    """Copy a placement into a step's record; True when something changed."""
    if where is None:
        return False
    before = (rec.task_id, rec.queue, rec.worker, rec.queued_at, rec.started_at)
    rec.task_id = where.task_id
    rec.queue = where.queue
    rec.worker = where.worker or rec.worker
    if where.queued_at is not None:
        rec.queued_at = where.queued_at
    if where.started_at is not None:
        rec.started_at = where.started_at  # the run time counts from the worker's start
    return before != (rec.task_id, rec.queue, rec.worker, rec.queued_at, rec.started_at)


def apply(executor: Executor, steps: dict[str, StepRecord]) -> list[StepRecord]:
    """The records whose placement changed since the last call (to be saved)."""
    take = getattr(executor, "placements", None)
    if take is None:
        return []
    changed = []
    for key, where in take().items():
        rec = steps.get(key)  # an `if:` test's job has no record of its own
        if rec is not None and rec.status not in _DONE and record(rec, where):
            changed.append(rec)
    return changed


def stop_remote(executor: Executor, prior: RunRecord, kill_grace: float) -> list[str]:
    """Before a resume (or a new run after a crash) starts anything: no attempt the dead
    runner sent to a worker may still run or start later. Every unfinished step is
    asked about, recorded task id or not: the runner may have died between submitting a
    task and recording it."""
    # A crashed run's running steps are recorded interrupted (store.check_liveness): a
    # guess, their attempts may still run (or be frozen) on a worker, so they count.
    done = _DONE - {INTERRUPTED} if prior.status == CRASHED else _DONE
    stop = getattr(executor, "stop_remote", None)
    if stop is None:
        placed = sorted(n for n, r in prior.steps.items() if r.status not in done and r.task_id)
        if placed:
            # This executor cannot reach the workers: going on would start these steps
            # again beside attempts that may still run there (REMOTE-2).
            raise UsageError(
                f"run {prior.run_id} left step(s) {', '.join(placed)} on remote workers "
                f"(queue {prior.steps[placed[0]].queue or 'default'}); this executor cannot "
                "stop them: resume with the executor the run used (--executor or the "
                "workflow's `executor:`)")
        return []
    # A step's `if:` test is a job of its own, keyed "if:NAME" (engine.IF_KEY).
    keys = [key for name, rec in prior.steps.items() if rec.status not in done
            for key in (name, f"if:{name}")]
    if not keys:
        return []
    lines: list[str] = stop(prior.run_id, keys, kill_grace)
    return lines
