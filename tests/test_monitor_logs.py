"""CSV and JSON Lines event logs: content, quoting, concurrency, permissions, switches."""

from __future__ import annotations

import csv
import json
import os
import stat
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from flowsh import monitorfiles
from flowsh.builtin import log_csv, log_jsonl
from flowsh.state import flowsh_home
from tests.conftest import emit_event
from tests.monitor_helpers import make_run, write_workflow

NASTY = 'rows: 1,234 "quoted", and\na second line; comma, "again"'


def _emit_run(wf, run) -> None:
    """The engine's event order for a run where `extract` retried once."""
    emit_event("flowsh_run_started", run=run, workflow=wf)
    for name in run.step_names:
        step = run.steps[name]
        if step.status == "skipped":
            emit_event("flowsh_step_finished", run=run, step=step, workflow=wf)
            continue
        for attempt in range(1, step.attempts + 1):
            step_attempts, step.attempts = step.attempts, attempt
            emit_event("flowsh_step_started", run=run, step=step, workflow=wf)
            step.attempts = step_attempts
            if attempt < step.attempts:
                step.attempts = attempt
                emit_event("flowsh_step_retrying", run=run, step=step, workflow=wf, delay=0.5)
                step.attempts = step_attempts
        emit_event("flowsh_step_finished", run=run, step=step, workflow=wf)
    emit_event("flowsh_run_finished", run=run, workflow=wf)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_csv_log_has_seed_columns_and_round_trips_quoting(tmp_path: Path) -> None:
    wf = write_workflow(tmp_path)
    run = make_run(wf, steps={
        "extract": {"attempts": 2},
        "load": {"status": "failed", "exit_code": 3, "message": NASTY},
        "report": {"status": "skipped"},
    }, status="failed")
    _emit_run(wf, run)

    path = flowsh_home() / "logs" / "workflow_logs.csv"
    assert path.read_text().splitlines()[0] == "timestamp,workflow_id,step,status,message"
    rows = _read_csv(path)
    assert [(r["step"], r["status"]) for r in rows] == [
        ("-", "started"),
        ("extract", "running"), ("extract", "retrying"), ("extract", "running"),
        ("extract", "succeeded"),
        ("transform", "running"), ("transform", "succeeded"),
        ("load", "running"), ("load", "failed"),
        ("report", "skipped"),
        ("-", "failed"),
    ]
    assert {r["workflow_id"] for r in rows} == {"etl_r1"}
    failed = next(r for r in rows if r["status"] == "failed" and r["step"] == "load")
    assert failed["message"].startswith(NASTY)  # commas, quotes and newline intact
    assert failed["message"] == NASTY + " after 1.0s"
    transform = next(r for r in rows if r["status"] == "succeeded" and r["step"] == "transform")
    assert transform["message"] == "exit code 0 after 1.0s"
    assert rows[2]["message"].startswith("attempt 1 failed: ")
    assert rows[2]["message"].endswith("; retrying in 0.5s")
    assert rows[1]["message"] == "attempt 1/3"
    for r in rows:
        datetime.fromisoformat(r["timestamp"].replace("Z", "+00:00"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_csv_concurrent_runs_append_whole_rows(tmp_path: Path) -> None:
    """Several processes log big rows (over PIPE_BUF) at once: no row is torn or lost."""
    wf_file = tmp_path / "etl.yaml"
    write_workflow(tmp_path)
    writer = f"""
import sys
from flowsh.loader import load_workflow
from flowsh.builtin import log_csv
from tests.monitor_helpers import make_run
wf = load_workflow({str(wf_file)!r})
me = sys.argv[1]
run = make_run(wf, run_id="p" + me)
for i in range(60):
    run.steps["load"].message = f"{{me}}:{{i}}:" + ("x," * 3000) + '"end"'
    log_csv.flowsh_step_finished(run=run, step=run.steps["load"], workflow=wf)
"""
    procs = [
        subprocess.Popen([sys.executable, "-c", writer, str(n)],
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
        for n in range(6)
    ]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    path = flowsh_home() / "logs" / "workflow_logs.csv"
    text = path.read_text()
    assert text.count("timestamp,workflow_id,step,status,message") == 1
    rows = _read_csv(path)
    assert len(rows) == 6 * 60
    seen = set()
    for r in rows:
        me, i, rest = r["message"].split(":", 2)
        assert rest.startswith("x," * 3000 + '"end"')
        seen.add((me, int(i)))
        assert r["workflow_id"] == f"etl_p{me}"
    assert len(seen) == 360


def test_csv_switches_and_relative_path(tmp_path: Path) -> None:
    off = write_workflow(tmp_path, "name: quiet\nmonitor: {csv: false, jsonl: false}\n"
                         "steps: [{name: a, run: 'true'}]\n", "quiet.yaml")
    _emit_run(off, make_run(off))
    assert not (flowsh_home() / "logs").exists()

    (tmp_path / "sub").mkdir()
    custom = write_workflow(tmp_path / "sub", "name: custom\nmonitor: {csv: out/log.csv}\n"
                            "steps: [{name: a, run: 'true'}]\n", "custom.yaml")
    _emit_run(custom, make_run(custom))
    rows = _read_csv(tmp_path / "sub" / "out" / "log.csv")
    assert [r["status"] for r in rows] == ["started", "running", "succeeded", "succeeded"]


def test_unwritable_log_warns_and_does_not_raise(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("")
    wf = write_workflow(tmp_path, f"name: bad\nmonitor: {{csv: {blocker}/x.csv, "
                        f"jsonl: {blocker}/x.jsonl}}\nsteps: [{{name: a, run: 'true'}}]\n",
                        "bad.yaml")
    run = make_run(wf)
    # Called directly (not through emit): the writers themselves must not raise.
    log_csv.flowsh_run_started(run=run, workflow=wf)
    log_jsonl.flowsh_run_started(run=run, workflow=wf)
    err = capsys.readouterr().err
    assert f"CSV log {blocker}/x.csv" in err
    assert f"JSON event log {blocker}/x.jsonl" in err


def test_jsonl_one_object_per_event_with_rfc3339_utc(tmp_path: Path) -> None:
    wf = write_workflow(tmp_path)
    run = make_run(wf, steps={"extract": {"attempts": 2}, "report": {"status": "skipped"}})
    _emit_run(wf, run)
    path = flowsh_home() / "logs" / "events.jsonl"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["event"] for e in events[:4]] == [
        "run_started", "step_started", "step_retrying", "step_started"]
    assert events[-1]["event"] == "run_finished"
    keys = {"event", "time", "run_id", "workflow", "step", "attempt", "status", "exit_code",
            "duration", "started_at", "ended_at"}
    for e in events:
        assert keys <= e.keys()
        assert e["run_id"] == "r1" and e["workflow"] == "etl"
        assert e["time"].endswith("Z")
        datetime.fromisoformat(e["time"].replace("Z", "+00:00"))
    retry = events[2]
    assert (retry["step"], retry["attempt"], retry["delay"]) == ("extract", 1, 0.5)
    done = next(e for e in events if e["event"] == "step_finished" and e["step"] == "extract")
    assert (done["attempt"], done["status"], done["exit_code"], done["duration"]) == (
        2, "succeeded", 0, 1.0)
    assert done["started_at"] == "2023-11-14T22:13:20.000Z"
    assert done["ended_at"] == "2023-11-14T22:13:21.000Z"
    final = events[-1]
    assert final["step"] is None and final["status"] == "succeeded" and final["exit_code"] == 0
    assert final["duration"] == pytest.approx(run.ended_at - run.started_at)
    assert monitorfiles.read_events(path, "r1") == events
    assert monitorfiles.read_events(path, "nope") == []


CRASHY = """
monitor: {csv: true, jsonl: true}
kill_grace: 1s
steps:
  - {name: a, run: 'echo a >> ran'}
  - {name: b, run: 'echo b >> ran; [ -e go ] || exec sleep 60'}
"""


@pytest.mark.parametrize("finder", ["status", "history", "resume"])
def test_a_crash_found_later_reaches_the_csv_and_jsonl_logs(tmp_path: Path, finder: str) -> None:
    """rt11 #13: kill -9 of the runner; the command that then marks the run `crashed` logs
    the rows ending its killed step and the run; the resumed attempt says 2/2, not 2/1."""
    import time

    from tests.conftest import run_cli

    flow = tmp_path / "flow.yaml"
    flow.write_text(CRASHY)
    proc = subprocess.Popen([sys.executable, "-m", "flowsh", "run", "-q", str(flow)],
                            cwd=tmp_path)
    end = time.monotonic() + 30
    while "b" not in ((tmp_path / "ran").read_text() if (tmp_path / "ran").exists() else ""):
        assert time.monotonic() < end
        time.sleep(0.05)
    csv_at = flowsh_home() / "logs" / "workflow_logs.csv"
    # The runner logs after it records, on its event thread: the file may not be there yet.
    while not csv_at.exists() or "b,running" not in csv_at.read_text():
        assert time.monotonic() < end
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    (tmp_path / "go").touch()
    if finder != "resume":
        assert run_cli(finder).returncode == 0
        assert run_cli(finder).returncode == 0  # found once, logged once
    res = run_cli("run", str(flow), "--resume", "-q")
    assert res.returncode == 0, res.stderr
    rows = [r[2:] for r in csv.reader(csv_at.open())][1:]
    assert ["b", "running", "attempt 1/1"] in rows
    crashed = [r for r in rows if r[1] == "crashed"]
    assert len(crashed) == 1 and crashed[0][0] == "-"
    assert "ended without its runner" in crashed[0][2]
    i = rows.index(crashed[0])
    assert rows[i - 1][:2] == ["b", "interrupted"] and "the runner died" in rows[i - 1][2]
    assert ["b", "running", "attempt 2/2"] in rows[i + 1:]
    assert rows[-1][:2] == ["-", "succeeded"]
    events = [json.loads(ln) for ln in (flowsh_home() / "logs" / "events.jsonl").open()]
    ends = [(e["event"], e["step"], e["status"]) for e in events]
    j = ends.index(("run_finished", None, "crashed"))
    assert ends[j - 1] == ("step_finished", "b", "interrupted")
    assert ends.count(("run_finished", None, "crashed")) == 1
