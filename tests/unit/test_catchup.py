"""flowsh.catchup: which missed slots a scheduled run makes up, over a real SQLite store."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from flowsh.builtin.state_sqlite import SQLiteBackend
from flowsh.catchup import Tick, missed, options_for, plan, succeeded_slots
from flowsh.errors import UsageError
from flowsh.loader import load_workflow
from flowsh.model import Workflow
from flowsh.runopts import RunOptions
from flowsh.slot import format_time, parse_time
from flowsh.state import FAILED, SKIPPED, SUCCEEDED, RunRecord, SkipReason, StepRecord

DAILY = "CRON_TZ=UTC 0 2 * * *"


def flow(tmp_path: Path, policy: str, window: str = "3d") -> Workflow:
    path = tmp_path / "flow.yaml"
    path.write_text(f"name: nightly\nschedule: {DAILY!r}\n"
                    f"catchup: {{window: {window}, policy: {policy}}}\n"
                    "steps:\n  - {name: a, run: 'true'}\n")
    return load_workflow(path)


def record(backend: SQLiteBackend, slot: str | None, status: str, n: int,
           params: dict[str, str] | None = None) -> RunRecord:
    run = RunRecord(run_id=f"r{n}", workflow="nightly", file=None, definition_hash="x",
                    params=params or {}, status=status,  # type: ignore[arg-type]
                    started_at=time.time() + n, scheduled_time=slot)
    backend.create_run(run)
    return run


@pytest.fixture
def backend(tmp_path: Path) -> SQLiteBackend:
    return SQLiteBackend(f"sqlite://{tmp_path / 'state.db'}")


def at(text: str) -> datetime:
    return parse_time(text)


SLOT = at("2026-12-05T02:00:00Z")


def test_all_oldest_first_skipping_succeeded_ones_and_redoing_failed(
        tmp_path: Path, backend: SQLiteBackend) -> None:
    wf = flow(tmp_path, "all")
    record(backend, "2026-12-03T02:00:00+00:00", SUCCEEDED, 1)
    # The same instant written in another offset is the same slot.
    record(backend, "2026-12-04T03:00:00+01:00", FAILED, 2)
    record(backend, None, SUCCEEDED, 3)  # an unscheduled run covers no slot
    got = missed(wf, backend, [DAILY], SLOT)
    assert [format_time(t) for t in got] == ["2026-12-02T02:00:00+00:00",
                                             "2026-12-04T02:00:00+00:00"]
    record(backend, "2026-12-04T03:00:00+01:00", SUCCEEDED, 4)
    got = missed(wf, backend, [DAILY], SLOT)
    assert [format_time(t) for t in got] == ["2026-12-02T02:00:00+00:00"]
    assert at("2026-12-04T02:00:00Z") in succeeded_slots(backend, wf)


def test_latest_takes_the_newest_missed_and_none_nothing(
        tmp_path: Path, backend: SQLiteBackend) -> None:
    got = missed(flow(tmp_path, "latest"), backend, [DAILY], SLOT)
    assert got == [at("2026-12-04T02:00:00Z")]
    assert missed(flow(tmp_path, "none"), backend, [DAILY], SLOT) == []


def test_window_start_included_slot_excluded_unless_by_hand(
        tmp_path: Path, backend: SQLiteBackend) -> None:
    wf = flow(tmp_path, "all", window="2d")
    got = missed(wf, backend, [DAILY], SLOT)
    assert got == [at("2026-12-03T02:00:00Z"), at("2026-12-04T02:00:00Z")]
    wf = flow(tmp_path, "all", window="47h59m")
    assert missed(wf, backend, [DAILY], SLOT) == [at("2026-12-04T02:00:00Z")]
    got = missed(wf, backend, [DAILY], SLOT, include_slot=True)
    assert got == [at("2026-12-04T02:00:00Z"), SLOT]


def test_window_across_a_dst_change(tmp_path: Path, backend: SQLiteBackend) -> None:
    """Europe/Lisbon goes back on 25 Oct 2026: the 01:30 slot happens once that night, and
    the window is real time: 3d before 26 Oct 01:30 WET is 23 Oct 02:30 WEST, after that
    day's slot."""
    path = tmp_path / "flow.yaml"
    lisbon = "CRON_TZ=Europe/Lisbon 30 1 * * *"
    path.write_text(f"name: nightly\nschedule: {lisbon!r}\n"
                    "catchup: {window: 3d, policy: all}\nsteps:\n  - {name: a, run: 'true'}\n")
    wf = load_workflow(path)
    slot = at("2026-10-26T01:30:00+00:00")
    got = [format_time(t) for t in missed(wf, backend, [lisbon], slot)]
    assert got == ["2026-10-24T01:30:00+01:00", "2026-10-25T01:30:00+01:00"]


def test_options_for_a_slot_is_a_new_run() -> None:
    base = RunOptions(params={"a": "1"}, run_id="x", scheduled_time="y")
    base.resume = RunRecord(run_id="r", workflow="w", file=None, definition_hash="",
                            params={})
    got = options_for(base, SLOT)
    assert got.resume is None and got.run_id is None and got.params == {"a": "1"}
    assert got.scheduled_time == "2026-12-05T02:00:00+00:00"
    assert base.scheduled_time == "y"


def test_plan_finishes_an_earlier_slots_run_first_then_the_missed_then_its_own(
        tmp_path: Path, backend: SQLiteBackend) -> None:
    wf = flow(tmp_path, "all")
    unfinished = RunRecord(run_id="old", workflow="nightly", file=None, definition_hash="x",
                           params={}, status=FAILED,  # type: ignore[arg-type]
                           scheduled_time="2026-12-03T02:00:00+00:00")
    opts = RunOptions(resume=unfinished, scheduled_time=format_time(SLOT))
    got = plan(wf, backend, opts, [DAILY], SLOT)
    # 2 Dec missed, 3 Dec resumed (not run twice), 4 Dec missed, then 5 Dec, new.
    assert [(o.resume.run_id if o.resume else None, o.scheduled_time) for o in got] == [
        (None, "2026-12-02T02:00:00+00:00"), ("old", "2026-12-05T02:00:00+00:00"),
        (None, "2026-12-04T02:00:00+00:00"), (None, "2026-12-05T02:00:00+00:00")]
    # Its own slot's run taken up: nothing before it but the missed ones.
    unfinished.scheduled_time = format_time(SLOT)
    got = plan(wf, backend, opts, [DAILY], SLOT)
    assert [o.resume is not None for o in got] == [False, False, False, True]


def test_a_window_of_too_many_slots_is_a_usage_error(tmp_path: Path,
                                                     backend: SQLiteBackend) -> None:
    path = tmp_path / "flow.yaml"
    path.write_text("name: nightly\nschedule: '* * * * * */5'\n"
                    "catchup: {window: 1d, policy: all}\nsteps:\n  - {name: a, run: 'true'}\n")
    with pytest.raises(UsageError, match=r"flow.yaml: key 'catchup': .* more than 10000"):
        missed(load_workflow(path), backend, ["* * * * * */5"], SLOT)


class CountingBackend(SQLiteBackend):
    """The real SQLite store, counting its reads of the run list."""

    lists = 0

    def list_runs(self, *args: Any, **kwargs: Any) -> list[RunRecord]:
        self.lists += 1
        return super().list_runs(*args, **kwargs)


def test_a_tick_reads_the_succeeded_runs_once(tmp_path: Path) -> None:
    """Catch-up and SLOT-8 ask the same store the same question: one read per tick, the
    cost that grows with the history."""
    backend = CountingBackend(f"sqlite://{tmp_path / 'state.db'}")
    record(backend, "2026-12-03T02:00:00+00:00", SUCCEEDED, 1)
    record(backend, "2026-12-05T02:00:00+00:00", SUCCEEDED, 2)
    tick = Tick(flow(tmp_path, "all"), RunOptions(scheduled_time=format_time(SLOT)), [DAILY],
                SLOT)
    got = tick(backend)
    assert [o.scheduled_time for o in got] == ["2026-12-02T02:00:00+00:00",
                                               "2026-12-04T02:00:00+00:00"]
    assert tick.done_by == "r2"
    assert backend.lists == 1


def test_a_slot_is_made_good_only_by_a_whole_run_of_the_same_params(
        tmp_path: Path, backend: SQLiteBackend) -> None:
    """CATCHUP-1 as SLOT-8: eu's run is not us's; a selection's run left steps out; a
    secret param is not recorded and not compared."""
    path = tmp_path / "flow.yaml"
    path.write_text(f"name: nightly\nschedule: {DAILY!r}\ncatchup: {{window: 3d, policy: all}}\n"
                    "params: {region: eu, API_TOKEN: t}\nsteps:\n  - {name: a, run: 'true'}\n")
    wf = load_workflow(path)
    record(backend, "2026-12-02T02:00:00+00:00", SUCCEEDED, 1,
           {"region": "eu", "API_TOKEN": "***"})
    record(backend, "2026-12-03T02:00:00+00:00", SUCCEEDED, 2, {"region": "us", "API_TOKEN": "***"})
    partial = record(backend, "2026-12-04T02:00:00+00:00", SUCCEEDED, 3,
                     {"region": "us", "API_TOKEN": "***"})
    backend.save_step(partial, StepRecord(name="b", status=SKIPPED,  # type: ignore[arg-type]
                                          skip_reason=SkipReason.NOT_SELECTED))
    eu = [format_time(t) for t in missed(wf, backend, [DAILY], SLOT,
                                         params={"region": "eu", "API_TOKEN": "x"})]
    assert eu == ["2026-12-03T02:00:00+00:00", "2026-12-04T02:00:00+00:00"]
    us = [format_time(t) for t in missed(wf, backend, [DAILY], SLOT,
                                         params={"region": "us", "API_TOKEN": "y"})]
    assert us == ["2026-12-02T02:00:00+00:00", "2026-12-04T02:00:00+00:00"]
