"""Statistics over a workflow's run history: success rate, duration percentiles, the
slowest and the flakiest steps. Used by `flowsh stats`, `flowsh report` and the live view's
estimates.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from flowsh.durations import format_duration
from flowsh.state import FAILED, FINISHED_RUN, SUCCEEDED, RunRecord, StateBackend

DEFAULT_HISTORY = 50


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None for no data."""
    if not values:
        return None
    data = sorted(values)
    pos = (len(data) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


@dataclass
class StepStats:
    name: str
    runs: int = 0  # runs in which the step ran at least one attempt
    succeeded: int = 0
    failed: int = 0
    retried: int = 0  # runs that needed more than one attempt
    p50: float | None = None
    p95: float | None = None
    mean_attempts: float | None = None

    unstable: int = 0  # runs that needed a retry or failed

    @property
    def unstable_rate(self) -> float:
        return self.unstable / self.runs if self.runs else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["unstable_rate"] = round(self.unstable_rate, 4)
        return data


@dataclass
class WorkflowStats:
    workflow: str
    runs: int = 0  # finished runs considered
    succeeded: int = 0
    failed: int = 0
    interrupted: int = 0
    run_p50: float | None = None
    run_p95: float | None = None
    steps: dict[str, StepStats] = field(default_factory=dict)
    first_started: float | None = None
    last_started: float | None = None

    @property
    def success_rate(self) -> float | None:
        return self.succeeded / self.runs if self.runs else None

    def slowest(self, n: int = 5) -> list[StepStats]:
        timed = [s for s in self.steps.values() if s.p50 is not None]
        return sorted(timed, key=lambda s: -(s.p50 or 0.0))[:n]

    def flakiest(self, n: int = 5) -> list[StepStats]:
        """Steps that sometimes need a retry or fail, but also succeed: broken steps (never
        succeeding) are not flaky, they are broken, and show in `failed` instead."""
        flaky = [s for s in self.steps.values() if s.unstable_rate > 0 and s.succeeded > 0]
        return sorted(flaky, key=lambda s: (-s.unstable_rate, s.name))[:n]

    def estimates(self) -> dict[str, float]:
        """Typical (median) duration of each step, for the live view's estimate column."""
        return {n: s.p50 for n, s in self.steps.items() if s.p50 is not None}

    def to_dict(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "runs": self.runs,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "interrupted": self.interrupted,
            "success_rate": None if self.success_rate is None else round(self.success_rate, 4),
            "run_duration": {"p50": self.run_p50, "p95": self.run_p95},
            "first_started": self.first_started,
            "last_started": self.last_started,
            "steps": {n: s.to_dict() for n, s in self.steps.items()},
            "slowest": [s.name for s in self.slowest()],
            "flakiest": [s.name for s in self.flakiest()],
        }


def compute(workflow: str, runs: Iterable[RunRecord]) -> WorkflowStats:
    """Statistics of finished runs (running ones are ignored), with their step records."""
    stats = WorkflowStats(workflow)
    run_durations: list[float] = []
    all_durations: list[float] = []
    step_durations: dict[str, list[float]] = {}
    step_attempts: dict[str, list[int]] = {}
    for run in runs:
        if run.status not in FINISHED_RUN:
            continue
        stats.runs += 1
        if run.started_at:
            stats.first_started = min(stats.first_started or run.started_at, run.started_at)
            stats.last_started = max(stats.last_started or run.started_at, run.started_at)
        if run.status == SUCCEEDED:
            stats.succeeded += 1
        elif run.status == FAILED:
            stats.failed += 1
        else:
            stats.interrupted += 1
        if run.ended_at and run.started_at:
            all_durations.append(run.ended_at - run.started_at)
            if run.status == SUCCEEDED:
                run_durations.append(run.ended_at - run.started_at)
        for name, step in run.steps.items():
            if step.attempts <= 0:
                continue  # skipped, or reused from the run this one resumed
            s = stats.steps.setdefault(name, StepStats(name))
            s.runs += 1
            step_attempts.setdefault(name, []).append(step.attempts)
            if step.attempts > 1:
                s.retried += 1
            if step.attempts > 1 or step.status == FAILED:
                s.unstable += 1
            if step.status == SUCCEEDED:
                s.succeeded += 1
                if step.started_at is not None and step.ended_at is not None:
                    step_durations.setdefault(name, []).append(step.ended_at - step.started_at)
            elif step.status == FAILED:
                s.failed += 1
    # Durations of successful runs say how long the work takes; failures end early.
    durations = run_durations or all_durations
    stats.run_p50, stats.run_p95 = percentile(durations, 0.5), percentile(durations, 0.95)
    for name, s in stats.steps.items():
        values = step_durations.get(name, [])
        s.p50, s.p95 = percentile(values, 0.5), percentile(values, 0.95)
        attempts = step_attempts.get(name, [])
        s.mean_attempts = sum(attempts) / len(attempts) if attempts else None
    return stats


def load_history(
    backend: StateBackend, workflow: str, *, limit: int = DEFAULT_HISTORY,
    exclude: str | None = None,
) -> list[RunRecord]:
    """The last `limit` finished runs of `workflow`, newest first, with their steps."""
    listed = backend.list_runs(workflow, limit=limit + (1 if exclude else 0),
                               statuses=FINISHED_RUN)
    out = []
    for run in listed:
        if run.run_id == exclude:
            continue
        out.append(backend.load_run(run.run_id) if not run.steps else run)
    return out[:limit]


def _dur(value: float | None) -> str:
    return "-" if value is None else format_duration(value)


def _when(ts: float | None) -> str:
    import time

    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def format_text(stats: WorkflowStats, order: Sequence[str] = ()) -> str:
    """The `flowsh stats` table for people."""
    rate = "-" if stats.success_rate is None else f"{stats.success_rate:.1%}"
    lines = [
        f"{stats.workflow}: {stats.runs} finished runs, "
        f"{_when(stats.first_started)} .. {_when(stats.last_started)}",
        f"success rate  {rate}  ({stats.succeeded} succeeded, {stats.failed} failed, "
        f"{stats.interrupted} interrupted)",
        f"run duration  p50 {_dur(stats.run_p50)}  p95 {_dur(stats.run_p95)}",
        "",
    ]
    names = [n for n in order if n in stats.steps] + sorted(set(stats.steps) - set(order))
    width = max([len(n) for n in names] + [4])
    lines.append(f"{'step':<{width}}  {'runs':>4}  {'ok':>6}  {'p50':>7}  {'p95':>7}  "
                 f"{'attempts':>8}  {'unstable':>8}")
    for n in names:
        s = stats.steps[n]
        ok = f"{s.succeeded / s.runs:.0%}" if s.runs else "-"
        att = f"{s.mean_attempts:.2f}" if s.mean_attempts is not None else "-"
        lines.append(f"{n:<{width}}  {s.runs:>4}  {ok:>6}  {_dur(s.p50):>7}  {_dur(s.p95):>7}  "
                     f"{att:>8}  {s.unstable_rate:>8.0%}")
    lines.append("")
    slow = ", ".join(f"{s.name} ({_dur(s.p50)})" for s in stats.slowest(3)) or "-"
    flaky = ", ".join(
        f"{s.name} ({s.unstable_rate:.0%} of runs retried or failed)" for s in stats.flakiest(3)
    ) or "none"
    lines.append(f"slowest   {slow}")
    lines.append(f"flakiest  {flaky}")
    return "\n".join(lines)
