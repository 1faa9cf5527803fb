"""flowsh.stats: percentiles, rates, slowest and flakiest steps, over real stored runs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from flowsh.state import CRASHED, FAILED, RUNNING, SUCCEEDED, RunRecord, StateBackend, StepRecord
from flowsh.stats import compute, format_text, load_history, percentile
from flowsh.store import open_backend


def test_percentile() -> None:
    assert percentile([], 0.5) is None
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([4, 1, 3, 2], 0.5) == 2.5
    assert percentile(list(range(1, 101)), 0.95) == pytest.approx(95.05)
    assert percentile([1, 2], 0.0) == 1 and percentile([1, 2], 1.0) == 2


def _run(i: int, status: str, steps: dict[str, tuple[str, int, float]]) -> RunRecord:
    run = RunRecord(run_id=f"r{i:03d}", workflow="w", file=None, definition_hash="h", params={},
                    status=status, started_at=1000.0 * (i + 1), ended_at=1000.0 * (i + 1) + 10 + i)  # type: ignore[arg-type]
    for name, (st, attempts, took) in steps.items():
        run.steps[name] = StepRecord(name, status=st, attempts=attempts,  # type: ignore[arg-type]
                                     started_at=0.0, ended_at=took)
    run.step_names = list(steps)
    return run


RUNS = [
    _run(0, SUCCEEDED, {"fetch": (SUCCEEDED, 1, 2.0), "load": (SUCCEEDED, 2, 30.0)}),
    _run(1, SUCCEEDED, {"fetch": (SUCCEEDED, 1, 4.0), "load": (SUCCEEDED, 1, 40.0)}),
    _run(2, FAILED, {"fetch": (SUCCEEDED, 1, 6.0), "load": (FAILED, 3, 1.0), "broken": (FAILED, 1, 1.0)}),
    _run(3, CRASHED, {"fetch": (SUCCEEDED, 1, 8.0), "load": (SUCCEEDED, 0, 0.0)}),
    _run(4, RUNNING, {"fetch": (SUCCEEDED, 1, 99.0)}),  # not finished: ignored
]


def test_compute() -> None:
    s = compute("w", RUNS)
    assert (s.runs, s.succeeded, s.failed, s.interrupted) == (4, 2, 1, 1)
    assert s.success_rate == 0.5
    assert s.run_p50 == pytest.approx(10.5)  # successful runs only: 10 and 11
    fetch, load = s.steps["fetch"], s.steps["load"]
    assert (fetch.runs, fetch.p50, fetch.unstable) == (4, 5.0, 0)
    assert (load.runs, load.succeeded, load.failed, load.retried, load.unstable) == (3, 2, 1, 2, 2)
    assert load.mean_attempts == 2.0 and load.p50 == 35.0  # successful attempts' durations
    assert [x.name for x in s.slowest()] == ["load", "fetch"]
    assert [x.name for x in s.flakiest()] == ["load"]  # broken never succeeds: not flaky
    assert s.estimates() == {"fetch": 5.0, "load": 35.0}
    assert (s.first_started, s.last_started) == (1000.0, 4000.0)


def test_to_dict_and_text() -> None:
    s = compute("w", RUNS)
    d = s.to_dict()
    assert d["success_rate"] == 0.5 and d["flakiest"] == ["load"]
    assert d["steps"]["load"]["unstable_rate"] == round(2 / 3, 4)
    text = format_text(s, order=["load", "fetch"])
    assert text.startswith("w: 4 finished runs")
    assert "success rate  50.0%  (2 succeeded, 1 failed, 1 interrupted)" in text
    rows = [ln.split()[0] for ln in text.splitlines() if ln.split() and ln.split()[0] in s.steps]
    assert rows == ["load", "fetch", "broken"]
    assert "flakiest  load (67% of runs retried or failed)" in text


def test_empty_history() -> None:
    s = compute("w", [])
    assert s.success_rate is None and s.slowest() == [] and s.flakiest() == []
    assert "success rate  -" in format_text(s) and "flakiest  none" in format_text(s)


@pytest.fixture
def backend() -> Iterator[StateBackend]:
    b = open_backend()
    try:
        yield b
    finally:
        b.close()


def test_load_history_from_a_real_store(backend: StateBackend) -> None:
    for run in RUNS:
        backend.create_run(run)
        for rec in run.steps.values():
            backend.save_step(run, rec)
    got = load_history(backend, "w", limit=2, exclude="r003")
    assert [r.run_id for r in got] == ["r002", "r001"]
    assert set(got[0].steps) == {"fetch", "load", "broken"}
    assert compute("w", load_history(backend, "w")).runs == 4
