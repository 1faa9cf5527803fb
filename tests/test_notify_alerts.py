"""The alerts plugin: run events -> Alerts, driven through the event hooks with real records."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from flowsh.loader import load_workflow
from flowsh.model import Workflow
from flowsh.state import RunRecord, StepRecord
from tests.conftest import emit_event
from tests.notify_servers import wait_for

CAPTURE = 'cat >> "$FLOWSH_ALERT_EVENT.jsonl"'


def _wf(tmp_path: Path, extra: str = "") -> Workflow:
    p = tmp_path / "etl.yaml"
    p.write_text(f"""\
name: etl
env:
  DB_PASSWORD: hunter2-pw
steps:
  - name: extract
    run: 'true'
  - name: load
    run: 'false'
notify:
  channels:
    sms: {{type: command, run: '{CAPTURE}'}}
  routes: {{critical: [sms], warning: [sms], info: [sms]}}
  events: {{run_failed: critical, step_retry: warning, step_failed: warning,
            run_succeeded: info, run_long: warning}}
{extra}""")
    return load_workflow(p)


def _run(status: str = "running") -> RunRecord:
    return RunRecord(run_id="20260101-0001", workflow="etl", file=None, definition_hash="h",
                     params={}, status=status, host="db1", started_at=time.time() - 65,
                     step_names=["extract", "load"])


def _read(tmp_path: Path, event: str) -> list[dict]:
    p = tmp_path / f"{event}.jsonl"
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines()]


def test_run_failed_names_the_step_with_log_tail_masked(tmp_path):
    wf = _wf(tmp_path)
    log = tmp_path / "load.log"
    log.write_text("connecting with hunter2-pw\nERROR: relation missing\n")
    run = _run()
    run.steps["extract"] = StepRecord("extract", status="succeeded", exit_code=0)
    run.steps["load"] = StepRecord("load", status="failed", exit_code=3, attempts=1,
                                   started_at=time.time() - 5, ended_at=time.time(),
                                   log_path=str(log))
    run.status, run.exit_code, run.ended_at = "failed", 1, time.time()
    emit_event("flowsh_run_finished", run=run, workflow=wf)
    [alert] = _read(tmp_path, "run_failed")
    assert alert["severity"] == "critical"
    assert alert["step"] == "load" and alert["exit_code"] == 3 and alert["host"] == "db1"
    assert alert["message"] == "run 20260101-0001 failed: step 'load' exited 3"
    assert alert["duration"] >= 65  # the run's duration, not the step's
    assert "ERROR: relation missing" in alert["log_tail"]
    assert "hunter2" not in json.dumps(alert)


def test_run_succeeded_is_info(tmp_path):
    wf = _wf(tmp_path)
    run = _run("succeeded")
    run.exit_code = 0
    emit_event("flowsh_run_finished", run=run, workflow=wf)
    [alert] = _read(tmp_path, "run_succeeded")
    assert alert["severity"] == "info" and alert["exit_code"] == 0


def test_step_retry_and_step_failed(tmp_path):
    wf = _wf(tmp_path)
    run = _run()
    step = StepRecord("load", status="retrying", exit_code=7, attempts=1)
    emit_event("flowsh_step_retrying", run=run, step=step, workflow=wf, delay=2.0)
    [retry] = _read(tmp_path, "step_retry")
    assert retry["severity"] == "warning"
    assert retry["message"] == "step 'load' exited 7 on attempt 1; retrying in 2.0s"
    step.status, step.attempts = "failed", 2
    emit_event("flowsh_step_finished", run=run, step=step, workflow=wf)
    step_ok = StepRecord("extract", status="succeeded", exit_code=0, attempts=1)
    emit_event("flowsh_step_finished", run=run, step=step_ok, workflow=wf)
    [failed] = _read(tmp_path, "step_failed")
    assert failed["step"] == "load" and "after 2 attempts" in failed["message"]


def test_events_not_mapped_send_nothing(tmp_path):
    p = tmp_path / "quiet.yaml"
    p.write_text(f"""\
steps: [{{name: a, run: 'true'}}]
notify:
  channels: {{sms: {{type: command, run: '{CAPTURE}'}}}}
  events: {{run_failed: critical}}
""")
    wf = load_workflow(p)
    run = _run("succeeded")
    emit_event("flowsh_run_finished", run=run, workflow=wf)
    emit_event("flowsh_step_retrying", run=run, step=StepRecord("a", exit_code=1),
                 workflow=wf, delay=1.0)
    assert list(tmp_path.glob("*.jsonl")) == []


def test_run_long_fires_while_running_and_not_after(tmp_path):
    wf = _wf(tmp_path, "  long_after: 0.1s\n")
    run = _run()
    run.steps["load"] = StepRecord("load", status="running")
    emit_event("flowsh_run_started", run=run, workflow=wf)
    assert wait_for(lambda: _read(tmp_path, "run_long"))
    [alert] = _read(tmp_path, "run_long")
    assert alert["message"] == ("run 20260101-0001 is still running after 100ms; "
                                "running: load")
    run.status = "succeeded"
    emit_event("flowsh_run_finished", run=run, workflow=wf)


def test_run_long_cancelled_when_the_run_ends(tmp_path):
    from flowsh import plugins
    from flowsh.events import RunContext
    from flowsh.secrets import Masker

    wf = _wf(tmp_path, "  long_after: 1h\n")
    run = _run()
    ctx = RunContext(run=run, workflow=wf, masker=Masker(), run_dir=tmp_path)
    plugins.emit("flowsh_run_started", ctx=ctx, run=run, workflow=wf)
    timer = ctx.slot("alerts")["timer"]
    assert timer.is_alive()
    run.status = "succeeded"
    plugins.emit("flowsh_run_finished", ctx=ctx, run=run, workflow=wf)
    timer.join(5)
    assert not timer.is_alive() and "timer" not in ctx.slot("alerts")
    assert _read(tmp_path, "run_long") == []


def test_bad_channel_reported_at_run_start(tmp_path, capsys):
    p = tmp_path / "bad.yaml"
    p.write_text("steps: [{name: a, run: 'true'}]\nnotify:\n  channels:\n"
                 "    mail: {type: email}\n")
    emit_event("flowsh_run_started", run=_run(), workflow=load_workflow(p))
    assert ("bad.yaml:4:5: notify channel 'mail' key 'to': is required"
            in capsys.readouterr().err)


@pytest.mark.parametrize("status", ["interrupted"])
def test_interrupted_run_alerts_as_run_failed(tmp_path, status):
    wf = _wf(tmp_path)
    run = _run(status)
    run.exit_code = 130
    run.steps["load"] = StepRecord("load", status="interrupted", signal=15)
    emit_event("flowsh_run_finished", run=run, workflow=wf)
    [alert] = _read(tmp_path, "run_failed")
    assert alert["message"] == ("run 20260101-0001 was interrupted: step 'load' was killed "
                                "by signal 15")
