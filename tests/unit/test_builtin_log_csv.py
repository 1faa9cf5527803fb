"""flowsh.builtin.log_csv: the CSV log, row by row, read back with the csv module."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest

from flowsh.builtin import log_csv
from flowsh.loader import load_workflow
from flowsh.state import FAILED, RUNNING, SUCCEEDED, StepRecord, flowsh_home

from . import backend_cases as cases


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _events(wf) -> None:  # type: ignore[no-untyped-def]
    run = cases.record("c1")
    log_csv.flowsh_run_started(run=run, workflow=wf)
    step = StepRecord("a", status=RUNNING, attempts=1, started_at=10.0)
    log_csv.flowsh_step_started(run=run, step=step, workflow=wf)
    step.status, step.exit_code, step.ended_at = FAILED, 3, 11.0
    step.message = 'said "no", twice\nthen stopped'
    log_csv.flowsh_step_retrying(run=run, step=step, workflow=wf, delay=2.0)
    step.attempts, step.status, step.message, step.exit_code = 2, SUCCEEDED, None, 0
    log_csv.flowsh_step_finished(run=run, step=step, workflow=wf)
    run.status, run.exit_code, run.ended_at = SUCCEEDED, 0, run.started_at + 5
    run.steps["a"] = step
    log_csv.flowsh_run_finished(run=run, workflow=wf)


def test_rows_default_path(write_flow: Callable[..., Path]) -> None:
    wf = load_workflow(write_flow("name: w\nsteps:\n  - {name: a, run: x, retries: 2}\n"))
    _events(wf)
    path = flowsh_home() / "logs" / "workflow_logs.csv"
    assert log_csv.csv_path(wf) == path
    assert path.read_text().startswith("timestamp,workflow_id,step,status,message\n")
    rows = _rows(path)
    assert [(r["step"], r["status"]) for r in rows] == [
        ("-", "started"), ("a", "running"), ("a", "retrying"), ("a", "succeeded"), ("-", "succeeded")]
    assert all(r["workflow_id"] == "w_c1" and r["timestamp"].endswith("Z") for r in rows)
    assert rows[1]["message"] == "attempt 1/3"
    assert rows[2]["message"] == ('attempt 1 failed: said "no", twice\nthen stopped after 1.0s; '
                                  "retrying in 2.0s")
    assert rows[4]["message"] == "exit 0 after 5.0s; steps: 1 pending, 1 succeeded"


def test_off_and_custom_path(write_flow: Callable[..., Path], tmp_path: Path) -> None:
    off = load_workflow(write_flow("name: w\nmonitor: {csv: false}\nsteps:\n  - {name: a, run: x}\n"))
    _events(off)
    assert log_csv.csv_path(off) is None and not (flowsh_home() / "logs").exists()
    mine = load_workflow(write_flow("name: w\nmonitor: {csv: out/log.csv}\nsteps:\n  - {name: a, run: x}\n",
                                    name="m.yaml"))
    _events(mine)
    assert len(_rows(tmp_path / "out" / "log.csv")) == 5


def test_unwritable_log_is_a_warning(write_flow: Callable[..., Path], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "t").write_text("")
    (tmp_path / "l.csv").symlink_to(tmp_path / "t")
    wf = load_workflow(write_flow("name: w\nmonitor: {csv: l.csv}\nsteps:\n  - {name: a, run: x}\n"))
    _events(wf)
    assert "CSV log" in capsys.readouterr().err
    assert (tmp_path / "t").read_text() == ""
