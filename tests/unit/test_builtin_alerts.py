"""flowsh.builtin.alerts: run events become alerts, delivered to a real `log` channel."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from flowsh.builtin import alerts
from flowsh.events import RunContext
from flowsh.loader import load_workflow
from flowsh.secrets import Masker
from flowsh.state import FAILED, RUNNING, SUCCEEDED, StepRecord

from . import backend_cases as cases

FLOW = """
name: w
notify:
  channels:
    ops: {type: log, path: alerts.jsonl, format: json}
  routes:
    critical: [ops]
    warning: [ops]
    info: [ops]
  events:
    run_failed: critical
    run_succeeded: info
    step_failed: warning
    step_retry: info
    run_long: warning
  long_after: 200ms
steps:
  - {name: a, run: x}
  - {name: b, run: x}
"""


def _ctx(write_flow: Callable[..., Path], text: str = FLOW):  # type: ignore[no-untyped-def]
    wf = load_workflow(write_flow(text))
    run = cases.record("al1")
    run.steps = {"a": StepRecord("a"), "b": StepRecord("b")}
    return RunContext(run=run, workflow=wf, masker=Masker(["hunter2222"]),
                      run_dir=Path("/nonexistent")), run


def _sent(tmp_path: Path) -> list[dict]:  # type: ignore[type-arg]
    p = tmp_path / "alerts.jsonl"
    return [json.loads(ln) for ln in p.read_text().splitlines()] if p.exists() else []


def test_run_failed_names_the_failed_step(write_flow: Callable[..., Path], tmp_path: Path) -> None:
    ctx, run = _ctx(write_flow)
    run.steps["a"].status = SUCCEEDED
    b = run.steps["b"]
    b.status, b.exit_code, b.attempts, b.message = FAILED, 3, 2, "pw hunter2222 rejected"
    b.started_at, b.ended_at = 1.0, 2.0
    run.status, run.exit_code, run.started_at, run.ended_at = FAILED, 1, 100.0, 160.0
    alerts.flowsh_run_finished(ctx=ctx)
    (sent,) = _sent(tmp_path)
    assert sent["event"] == "run_failed" and sent["severity"] == "critical" and sent["step"] == "b"
    assert sent["message"] == "run al1 failed: step 'b' exited 3 after 2 attempts: pw *** rejected"
    assert sent["duration"] == 60.0 and sent["exit_code"] == 3


def test_step_events(write_flow: Callable[..., Path], tmp_path: Path) -> None:
    ctx, _ = _ctx(write_flow)
    step = StepRecord("a", status=RUNNING, attempts=1, exit_code=124)
    alerts.flowsh_step_retrying(ctx=ctx, step=step, delay=5.0)
    step.status, step.attempts, step.exit_code, step.signal = FAILED, 2, 137, 9
    alerts.flowsh_step_finished(ctx=ctx, step=step)
    alerts.flowsh_step_finished(ctx=ctx, step=StepRecord("b", status=SUCCEEDED))  # no alert
    alerts.wait_sent(ctx)
    sent = sorted(_sent(tmp_path), key=lambda a: a["event"])
    assert [a["event"] for a in sent] == ["step_failed", "step_retry"]
    assert sent[1]["message"] == "step 'a' timed out (exit 124) on attempt 1; retrying in 5.0s"
    assert sent[0]["message"] == "step 'a' was killed by signal 9 after 2 attempts"


def test_success_and_events_without_severity(write_flow: Callable[..., Path], tmp_path: Path) -> None:
    ctx, run = _ctx(write_flow, FLOW.replace("    run_succeeded: info\n", ""))
    run.status = SUCCEEDED
    alerts.flowsh_run_finished(ctx=ctx)
    assert _sent(tmp_path) == []
    ctx, run = _ctx(write_flow)
    run.status, run.exit_code = SUCCEEDED, 0
    alerts.flowsh_run_finished(ctx=ctx)
    assert [a["event"] for a in _sent(tmp_path)] == ["run_succeeded"]


def test_run_long_fires_once_while_running_and_is_cancelled(write_flow: Callable[..., Path],
                                                             tmp_path: Path) -> None:
    ctx, run = _ctx(write_flow)
    run.steps["a"].status = RUNNING
    alerts.flowsh_run_started(ctx=ctx)
    deadline = time.monotonic() + 20
    while not _sent(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.05)
    (long_,) = _sent(tmp_path)
    assert long_["event"] == "run_long" and long_["message"].endswith("running: a")
    run.status = SUCCEEDED
    alerts.flowsh_run_finished(ctx=ctx)
    ctx2, _ = _ctx(write_flow)
    alerts.flowsh_run_started(ctx=ctx2)
    alerts.flowsh_run_finished(ctx=ctx2)  # ends before long_after: the timer never fires
    # finished cancelled and joined the timer: no thread left to fire later
    assert not [t for t in threading.enumerate() if t.name.startswith("flowsh-run-long-")]
    assert [a["event"] for a in _sent(tmp_path)].count("run_long") == 1


def test_a_bad_channel_is_a_warning_at_start(write_flow: Callable[..., Path],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    ctx, _ = _ctx(write_flow, FLOW.replace("format: json", "format: xml"))
    alerts.flowsh_run_started(ctx=ctx)
    alerts.flowsh_run_finished(ctx=ctx)
    assert "must be 'text' or 'json'" in capsys.readouterr().err
