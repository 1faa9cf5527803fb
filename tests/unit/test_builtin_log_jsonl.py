"""flowsh.builtin.log_jsonl: the JSON Lines event log, read back."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from flowsh.builtin import log_jsonl
from flowsh.loader import load_workflow
from flowsh.monitorfiles import read_events
from flowsh.state import FAILED, RUNNING, SUCCEEDED, StepRecord, flowsh_home

from . import backend_cases as cases


def _events(wf, run_id: str = "j1") -> None:  # type: ignore[no-untyped-def]
    run = cases.record(run_id)
    run.resumed_from = "j0"
    log_jsonl.flowsh_run_started(run=run, workflow=wf)
    step = StepRecord("a", status=RUNNING, attempts=1, started_at=10.0)
    log_jsonl.flowsh_step_started(run=run, step=step, workflow=wf)
    step.status, step.exit_code, step.ended_at, step.signal = FAILED, 137, 12.25, 9
    log_jsonl.flowsh_step_retrying(run=run, step=step, workflow=wf, delay=1.23456)
    step.status, step.exit_code, step.signal = SUCCEEDED, 0, None
    log_jsonl.flowsh_step_finished(run=run, step=step, workflow=wf)
    run.status, run.exit_code, run.ended_at = SUCCEEDED, 0, run.started_at + 3
    log_jsonl.flowsh_run_finished(run=run, workflow=wf)


def test_one_object_per_event(write_flow: Callable[..., Path]) -> None:
    wf = load_workflow(write_flow("name: w\nsteps:\n  - {name: a, run: x}\n"))
    _events(wf)
    path = flowsh_home() / "logs" / "events.jsonl"
    assert log_jsonl.jsonl_path(wf) == path
    evs = [json.loads(ln) for ln in path.read_text().splitlines()]
    assert [e["event"] for e in evs] == ["run_started", "step_started", "step_retrying",
                                         "step_finished", "run_finished"]
    assert evs[0]["resumed_from"] == "j0" and evs[0]["step"] is None
    assert evs[1]["duration"] is None and evs[1]["ended_at"] is None
    assert evs[2]["delay"] == 1.235 and evs[2]["signal"] == 9 and evs[2]["duration"] == 2.25
    assert evs[4]["duration"] == 3.0 and evs[4]["status"] == "succeeded"
    assert read_events(path, "j1") == evs


def test_two_runs_in_one_log(write_flow: Callable[..., Path], tmp_path: Path) -> None:
    wf = load_workflow(write_flow("name: w\nmonitor: {jsonl: ev.jsonl}\nsteps:\n  - {name: a, run: x}\n"))
    _events(wf, "j1")
    _events(wf, "j2")
    assert len(read_events(tmp_path / "ev.jsonl", "j2")) == 5


def test_off(write_flow: Callable[..., Path]) -> None:
    wf = load_workflow(write_flow("name: w\nmonitor: {jsonl: false}\nsteps:\n  - {name: a, run: x}\n"))
    _events(wf)
    assert log_jsonl.jsonl_path(wf) is None and not (flowsh_home() / "logs").exists()


def test_unwritable_is_a_warning(write_flow: Callable[..., Path], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "d").mkdir()
    wf = load_workflow(write_flow("name: w\nmonitor: {jsonl: d}\nsteps:\n  - {name: a, run: x}\n"))
    _events(wf)
    assert "JSON event log" in capsys.readouterr().err
