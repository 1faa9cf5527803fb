"""flowsh.monitorfiles: where monitoring files go, whole records under two writers, events."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from flowsh.loader import load_workflow
from flowsh.monitorfiles import (
    CSV_COLUMNS,
    append_locked,
    attempts_allowed,
    csv_row,
    event,
    event_line,
    events_path,
    make_parent,
    read_events,
    release,
    resolve,
    rfc3339,
    step_summary,
    write_creating_dir,
)
from flowsh.state import FAILED, StepRecord, flowsh_home

from . import backend_cases as cases


def test_rfc3339() -> None:
    assert rfc3339(None) is None
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"
    from datetime import datetime, timezone

    ts = datetime(2026, 11, 25, 2, 0, 3, 512900, tzinfo=timezone.utc).timestamp()
    assert rfc3339(ts) == "2026-11-25T02:00:03.512Z"  # truncated, never rounded up


def test_resolve(write_flow: Callable[..., Path], tmp_path: Path) -> None:
    wf = load_workflow(write_flow("name: w\nsteps:\n  - {name: a, run: x}\n"))
    assert resolve(False, "logs/x.csv", wf) is None and resolve(None, "logs/x.csv", wf) is None
    assert resolve(True, "logs/x.csv", wf) == flowsh_home() / "logs/x.csv"
    assert resolve("out/x.csv", "d", wf) == tmp_path.resolve() / "out/x.csv"
    assert resolve("/abs/x.csv", "d", wf) == Path("/abs/x.csv")


def test_make_parent_private_under_home_and_refuses_links(tmp_path: Path) -> None:
    target = flowsh_home() / "logs" / "a" / "x.csv"
    make_parent(target)
    assert (flowsh_home() / "logs" / "a").stat().st_mode & 0o777 == 0o700
    (flowsh_home() / "metrics").symlink_to(tmp_path)
    with pytest.raises(OSError, match="is a symbolic link"):
        make_parent(flowsh_home() / "metrics" / "sub" / "m.prom")
    outside = tmp_path / "o" / "x.csv"
    make_parent(outside)
    assert outside.parent.is_dir()


WRITER = """
import sys
from pathlib import Path
from flowsh.monitorfiles import append_locked, release
p = Path(sys.argv[1])
for i in range(200):
    append_locked(p, (sys.argv[2] * 5000 + "\\n").encode(), header=b"HEADER\\n")
release(p)
"""


def test_append_locked_whole_records_across_processes(tmp_path: Path) -> None:
    p = tmp_path / "shared.log"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(p), c], env=os.environ.copy())
             for c in "ab"]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    lines = p.read_text().splitlines()
    assert lines[0] == "HEADER" and lines.count("HEADER") == 1
    assert sorted(set(lines[1:])) == ["a" * 5000, "b" * 5000] and len(lines) == 401


def test_append_refuses_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("")
    (tmp_path / "l.csv").symlink_to(tmp_path / "t")
    with pytest.raises(OSError, match="symbolic link"):
        append_locked(tmp_path / "l.csv", b"x")
    assert (tmp_path / "t").read_text() == ""
    release(tmp_path / "l.csv")


def test_write_creating_dir(tmp_path: Path) -> None:
    p = tmp_path / "new" / "m.prom"
    write_creating_dir(p, "x 1\n", mode=0o644)
    assert p.read_text() == "x 1\n" and p.stat().st_mode & 0o777 == 0o644


def test_attempts_allowed(write_flow: Callable[..., Path]) -> None:
    wf = load_workflow(write_flow("name: w\nsteps:\n  - {name: a, run: x, retries: 2}\n"))
    assert attempts_allowed(wf, "a") == 3
    assert attempts_allowed(wf, "a", attempt=5) == 5
    assert attempts_allowed(wf, "nope") is None


def test_csv_row_quotes() -> None:
    row = csv_row("t", 'say "hi", then\nleave', "x")
    assert next(csv.reader(io.StringIO(row.decode()))) == ["t", 'say "hi", then\nleave', "x"]
    assert csv_row(*CSV_COLUMNS) == b"timestamp,workflow_id,step,status,message\n"


def test_step_summary() -> None:
    s = StepRecord("a", status=FAILED, attempts=2, exit_code=3, started_at=10.0, ended_at=11.2)
    assert step_summary(s) == "exit code 3 after 1.2s, 2 attempts"
    s.message = "timed out"
    assert step_summary(s) == "timed out after 1.2s, 2 attempts"


def test_events_round_trip(tmp_path: Path) -> None:
    run = cases.record("ev1")
    step = StepRecord("a", status=FAILED, attempts=1, exit_code=2, started_at=1.0,
                      ended_at=2.5, signal=None, message="boom")
    p = tmp_path / "events.jsonl"
    other = cases.record("ev2")
    data = b"".join([event_line(event("step_finished", run, step)),
                     event_line(event("run_started", other)), b"{garbage\n",
                     event_line(event("run_finished", run, note="é"))])
    p.write_bytes(data)
    got = read_events(p, "ev1")
    assert [e["event"] for e in got] == ["step_finished", "run_finished"]
    assert got[0]["step"] == "a" and got[0]["duration"] == 1.5 and got[0]["message"] == "boom"
    assert got[1]["note"] == "é" and got[1]["duration"] is not None
    assert json.loads(data.splitlines()[0])["time"].endswith("Z")
    assert read_events(tmp_path / "none.jsonl", "ev1") == []


def test_events_path(write_flow: Callable[..., Path], tmp_path: Path) -> None:
    assert events_path(None) == flowsh_home() / "logs/events.jsonl"
    wf = load_workflow(write_flow("name: w\nmonitor:\n  jsonl: ev.jsonl\nsteps:\n  - {name: a, run: x}\n"))
    assert events_path(wf) == tmp_path.resolve() / "ev.jsonl"
    off = load_workflow(write_flow("name: w\nmonitor:\n  jsonl: false\nsteps:\n  - {name: a, run: x}\n", name="o.yaml"))
    assert events_path(off) == flowsh_home() / "logs/events.jsonl"
