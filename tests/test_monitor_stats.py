"""History statistics: percentiles, success rate, slowest and flakiest steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowsh.stats import compute, format_text, percentile
from tests.monitor_helpers import make_run, write_workflow


def test_percentile_interpolates() -> None:
    assert percentile([], 0.5) is None
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5
    assert percentile([float(i) for i in range(1, 101)], 0.95) == pytest.approx(95.05)


def test_compute_history(tmp_path: Path) -> None:
    wf = write_workflow(tmp_path)
    runs = []
    for i in range(10):
        steps = {"transform": {"duration": 10.0 + i}, "extract": {"duration": 1.0}}
        if i % 5 == 0:
            steps["extract"] = {"duration": 1.0, "attempts": 2}  # flaky: 2 of 10 retried
        status = "succeeded"
        if i == 9:
            steps["load"] = {"status": "failed", "exit_code": 1}
            steps["report"] = {"status": "skipped"}
            status = "failed"
        runs.append(make_run(wf, f"r{i}", start=1_700_000_000.0 + i * 3600, status=status,
                             steps=steps))
    running = make_run(wf, "live", status="running")
    stats = compute("etl", [*runs, running])

    assert (stats.runs, stats.succeeded, stats.failed) == (10, 9, 1)
    assert stats.success_rate == pytest.approx(0.9)
    t = stats.steps["transform"]
    assert (t.runs, t.p50, t.p95) == (10, pytest.approx(14.5), pytest.approx(18.55))
    ex = stats.steps["extract"]
    assert (ex.retried, ex.unstable_rate, ex.mean_attempts) == (2, 0.2, 1.2)
    assert stats.steps["report"].runs == 9  # skipped once: not counted as a run of it
    assert [s.name for s in stats.slowest(2)] == ["transform", "extract"]
    # load failed once and succeeded 9 times: flaky; extract retried in 2 of 10.
    assert [s.name for s in stats.flakiest()] == ["extract", "load"]
    # Run durations come from the successful runs only.
    succeeded = sorted(r.ended_at - r.started_at for r in runs[:9])
    assert stats.run_p50 == pytest.approx(percentile(succeeded, 0.5))
    assert stats.estimates()["transform"] == pytest.approx(14.5)

    text = format_text(stats, [s.name for s in wf.steps])
    assert "success rate  90.0%  (9 succeeded, 1 failed, 0 interrupted)" in text
    assert "slowest   transform (14.5s)" in text
    assert "flakiest  extract (20% of runs retried or failed)" in text
    data = stats.to_dict()
    assert data["flakiest"] == ["extract", "load"] and data["success_rate"] == 0.9


def test_a_step_that_never_succeeds_is_broken_not_flaky(tmp_path: Path) -> None:
    wf = write_workflow(tmp_path)
    runs = [make_run(wf, f"r{i}", status="failed",
                     steps={"load": {"status": "failed", "exit_code": 2}}) for i in range(3)]
    stats = compute("etl", runs)
    assert stats.flakiest() == []
    assert stats.steps["load"].failed == 3
    assert stats.success_rate == 0.0
