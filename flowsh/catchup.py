"""Catch-up without a daemon: slots of the schedule that no run made good (CATCHUP-*).

When a scheduled run starts (or `flowsh schedule catchup FILE` is run by hand), the
slots of the workflow's `schedule` in the `catchup.window` before the run's own slot that
no run made good in the history (as SLOT-8 says of the run's own: a succeeded run of that
slot, as an instant, with the same params, secrets aside, that ran every step) are run
first, each as a new run with its own FLOWSH_SCHEDULED_TIME: all of them oldest first
(`policy: all`), the newest only (`latest`), or none. They run under the same hold of the
workflow's overlap lock as the run that found them, so two ticks never make up the same
slot twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from functools import cached_property

from flowsh.errors import UsageError
from flowsh.model import Workflow
from flowsh.runenv import resolve_params
from flowsh.runopts import RunOptions
from flowsh.slot import format_time, latest_slot, parse_instant, slots_by_instant
from flowsh.state import SUCCEEDED, RunRecord, SkipReason, StateBackend


class Succeeded:
    """This workflow's succeeded runs by the slot they stand for, read from the store once
    and only when asked: a tick's catch-up and its own slot (SLOT-8) ask the same
    question of the same runs, and a store of many runs makes the read the tick's cost."""

    def __init__(self, backend: StateBackend, wf: Workflow) -> None:
        self.backend = backend
        self.wf = wf

    @cached_property
    def by_slot(self) -> dict[datetime, list[RunRecord]]:
        """Each slot (its UTC instant) and its succeeded runs, newest first."""
        found: dict[datetime, list[RunRecord]] = {}
        for run in self.backend.list_runs(self.wf.identity,
                                          statuses=frozenset({SUCCEEDED})):
            when = _slot_of(run.scheduled_time)  # None: no slot, or a record edited by hand
            if when is not None:
                found.setdefault(when, []).append(run)
        return found

    def run_for(self, at: datetime, params: Mapping[str, str]) -> str | None:
        """The id of the latest run of `at` (a UTC instant) with these `params` that
        succeeded, if any. A run of a selection (`--only`, `--from`, `--until`) left steps
        out: the slot is not done. Nor by a run with other params (two crontab lines,
        `region=eu` and `region=us`, are two jobs); secret params are not recorded and
        not compared."""
        secret = self.wf.secret_names()

        def plain(values: Mapping[str, str]) -> dict[str, str]:
            return {k: v for k, v in values.items() if k not in secret}

        want = plain(params)
        for run in self.by_slot.get(at, ()):
            if plain(run.params) == want and not _partial(self.backend.load_run(run.run_id)):
                return run.run_id
        return None


def succeeded_slots(backend: StateBackend, wf: Workflow) -> set[datetime]:
    """The slots (UTC instants) of this workflow's runs that succeeded."""
    return set(Succeeded(backend, wf).by_slot)


def missed(wf: Workflow, backend: StateBackend, texts: list[str], slot: datetime, *,
           include_slot: bool = False,
           params: Mapping[str, str] | None = None) -> list[datetime]:
    """The slots `wf.catchup` says to run before `slot`, oldest first, with `params` (the
    command line's; the file's defaults under them).

    The window is [slot - window, slot): its start is included, and `slot` itself only
    when `include_slot` (by hand, no run is about to stand for it)."""
    return list(_missed(wf, Succeeded(backend, wf), texts, slot.astimezone(timezone.utc),
                        params or {}, include_slot).values())


def _missed(wf: Workflow, done: Succeeded, texts: list[str], at: datetime,
            given: Mapping[str, str], include_slot: bool = False) -> dict[datetime, datetime]:
    """`missed`, each slot keyed by its instant: `at` and the keys are in UTC, the one form
    slots are compared in (an aware datetime in a repeated hour, 01:30 on a fall-back day,
    is never equal to one in another zone: PEP 495); the values keep their zone's offset
    for FLOWSH_SCHEDULED_TIME."""
    policy = wf.catchup
    if policy is None or policy.policy == "none":
        return {}
    # In UTC: `slot - window` on the zone's datetime is wall-clock arithmetic, an hour off
    # across a DST change (a 3h window took 4 hours of slots on a fall-back night).
    start = at - timedelta(seconds=policy.window)
    end = at + timedelta(seconds=1) if include_slot else at
    try:
        slots = slots_by_instant(texts, start, end)
    except ValueError as exc:  # a window of more than MAX_SLOTS fire times
        raise UsageError(f"{wf.path}: key 'catchup': {exc}") from None
    # The runs it makes up run with these params: a slot is missed unless a run of them
    # made it good (SLOT-8; eu's run is not us's).
    params = resolve_params(wf, given, None)
    todo = [(u, t) for u, t in slots.items() if done.run_for(u, params) is None]
    return dict(todo[-1:] if policy.policy == "latest" else todo)


def options_for(opts: RunOptions, slot: datetime) -> RunOptions:
    """A new run of `slot`: the caller's options, never a resume, with its own time."""
    return replace(opts, resume=None, run_id=None, scheduled_time=format_time(slot))


def plan(wf: Workflow, backend: StateBackend, opts: RunOptions, texts: list[str],
         slot: datetime) -> list[RunOptions]:
    """A scheduled tick's runs, oldest slot first: `opts.resume` when it is an unfinished
    run of another slot (finished first, keeping its slot: SLOT-4, SLOT-5), the missed
    slots of `catchup` but that one, then a run of `slot` itself."""
    return _plan(wf, Succeeded(backend, wf), opts, texts, slot.astimezone(timezone.utc))


def _plan(wf: Workflow, done: Succeeded, opts: RunOptions, texts: list[str],
          at: datetime) -> list[RunOptions]:
    first = opts.resume
    if first is not None and _slot_of(first.scheduled_time) == at:
        first = None  # this slot's own run, taken up: nothing comes before it
    todo = _missed(wf, done, texts, at, opts.params)
    runs: list[tuple[datetime, RunOptions]] = []
    if first is not None:
        when = _slot_of(first.scheduled_time)
        if when is not None:
            todo.pop(when, None)
        runs.append((when or datetime.min.replace(tzinfo=timezone.utc), opts))
    runs.extend((u, options_for(opts, t)) for u, t in todo.items())
    runs.sort(key=lambda r: r[0])
    own = opts if first is None else replace(opts, resume=None, run_id=None)
    return [o for _, o in runs] + [own]


def _partial(run: RunRecord) -> bool:
    return any(r.skip_reason == SkipReason.NOT_SELECTED for r in run.steps.values())


@dataclass
class Tick:
    """A `--scheduled` tick's plan (SLOT-8): `plan`, but this slot's own run is left out
    when a run of it succeeded meanwhile (another tick of the same slot held the lock
    first); `done_by` then names that run. A resume of this slot's own run still runs."""

    wf: Workflow
    opts: RunOptions
    texts: list[str]
    slot: datetime
    done_by: str | None = None

    def __post_init__(self) -> None:
        self.slot = self.slot.astimezone(timezone.utc)  # compared as an instant only

    def __call__(self, backend: StateBackend) -> list[RunOptions]:
        done = Succeeded(backend, self.wf)
        runs = _plan(self.wf, done, self.opts, self.texts, self.slot)
        resumed = self.opts.resume
        if resumed is not None and _slot_of(resumed.scheduled_time) == self.slot:
            return runs
        self.done_by = done.run_for(self.slot, resolve_params(self.wf, self.opts.params, None))
        return runs[:-1] if self.done_by is not None else runs


def _slot_of(text: str | None) -> datetime | None:
    # In UTC, and so compared with slots in UTC: an aware datetime in a repeated hour
    # (01:30 on a fall-back day) is never equal to one in another zone (PEP 495).
    try:
        return parse_instant(text) if text else None
    except ValueError:
        return None


def current_slot(texts: list[str], now: datetime) -> datetime:
    found = latest_slot(texts, now)
    assert found is not None  # texts is never empty here
    return found
