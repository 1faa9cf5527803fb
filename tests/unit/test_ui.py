"""flowsh.ui: plain, quiet and JSON reporters, and the lines they share.

(The live TTY view needs a terminal: tests/test_monitor_tty.py drives it through a pty.)"""

from __future__ import annotations

import io
import json
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest

from flowsh.loader import load_workflow
from flowsh.state import FAILED, SKIPPED, SUCCEEDED, StepRecord
from flowsh.ui import (
    JSONReporter,
    PlainReporter,
    QuietReporter,
    next_steps,
    plural,
    reporter_kind,
    summary,
)

from . import backend_cases as cases

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d "


def _run(status: str = FAILED):  # type: ignore[no-untyped-def]
    run = cases.record("r1")
    run.status = status  # type: ignore[assignment]
    run.started_at, run.ended_at = 100.0, 112.5
    run.steps["a"] = StepRecord("a", status=SUCCEEDED, attempts=1, started_at=100.0, ended_at=101.0)
    run.steps["b"] = StepRecord("b", status=FAILED, attempts=2, started_at=101.0, ended_at=112.0,
                                message="exit code 3")
    run.steps["c"] = StepRecord("c", status=SKIPPED, message="upstream failed")
    return run


def test_plural_summary_next_steps() -> None:
    assert (plural(0, "step"), plural(1, "step"), plural(2, "step")) == ("0 steps", "1 step", "2 steps")
    assert summary(_run()) == "run r1 failed in 12.5s (1 failed, 1 skipped, 1 succeeded)"
    line = next_steps(_run(), "sqlite:///my state.db")
    assert line == ("see: flowsh status r1 --state 'sqlite:///my state.db'  |  "
                    "continue: flowsh resume r1 --state 'sqlite:///my state.db'")
    assert shlex.split(line.split("|")[1])[-1] == "sqlite:///my state.db"


def test_plain_reporter_lines(write_flow: Callable[..., Path]) -> None:
    wf = load_workflow(write_flow("name: w\nsteps:\n  - {name: a, run: x}\n"))
    out, err = io.StringIO(), io.StringIO()
    r = PlainReporter(out=out, err=err)
    run = _run()
    run.steps["a"].status = "pending"  # type: ignore[assignment]
    r.run_started(run, wf)
    run.steps["a"].status = SUCCEEDED
    r.step_started(run, run.steps["b"])
    r.step_output("b", "hello")
    r.prefix = True
    r.step_output("b", "again")
    r.step_retrying(run, run.steps["b"], 4.0)
    for name in "abc":
        r.step_finished(run, run.steps[name])
    r.run_finished(run)
    assert out.getvalue() == "hello\n[b] again\n"
    lines = [re.sub(STAMP, "", ln) for ln in err.getvalue().splitlines()]
    assert lines == [
        "w: starting run r1 (3 steps)",
        "b: started (attempt 2)",
        "b: exit code 3 (attempt 2); retrying in 4.0s",
        "a: succeeded in 1.0s [1/3]",
        "b: failed in 11.0s: exit code 3 [2/3]",
        "c: skipped (upstream failed) [3/3]",
        "run r1 failed in 12.5s (1 failed, 1 skipped, 1 succeeded)",
        "see: flowsh status r1  |  continue: flowsh resume r1",
    ]


def test_quiet_reporter_speaks_only_on_failure(write_flow: Callable[..., Path],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    wf = load_workflow(write_flow("name: w\nsteps:\n  - {name: a, run: x}\n"))
    ok = _run(SUCCEEDED)
    r = QuietReporter()
    r.run_started(ok, wf)
    r.step_finished(ok, ok.steps["a"])
    r.run_finished(ok)
    assert capsys.readouterr().err == ""
    bad = _run(FAILED)
    r.step_finished(bad, bad.steps["b"])
    r.run_finished(bad)
    err = capsys.readouterr().err
    assert "b: failed" in err and "continue: flowsh resume r1" in err


def test_json_reporter_one_object_per_line(write_flow: Callable[..., Path]) -> None:
    wf = load_workflow(write_flow("name: w\nsteps:\n  - {name: a, run: x}\n"))
    out = io.StringIO()
    r = JSONReporter(out=out)
    run = _run()
    run.steps["a"].outputs = {"K": "v"}
    r.run_started(run, wf)
    r.step_started(run, run.steps["a"])
    r.step_retrying(run, run.steps["b"], 1.23456)
    r.step_finished(run, run.steps["a"])
    r.step_output("a", "not shown")
    r.run_finished(run)
    events = [json.loads(ln) for ln in out.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["run_started", "step_started", "step_retrying",
                                            "step_finished", "run_finished"]
    assert events[0]["steps"] == ["a", "b", "c"] and events[2]["delay"] == 1.235
    assert events[3]["outputs"] == {"K": "v"} and events[3]["duration"] == 1.0
    assert events[4]["status"] == "failed" and all(e["run_id"] == "r1" for e in events)


def test_reporter_kind() -> None:
    assert reporter_kind(json_events=True) == "json"
    assert reporter_kind(json_events=True, quiet=True) == "json"
    assert reporter_kind(quiet=True) == "quiet"
    assert reporter_kind() == "plain"  # under pytest stdout is no terminal


def test_tty_view_shows_foreach_items_under_their_step_brackets_and_all() -> None:
    """`sync[eu]` is no rich markup tag: the live view and its lines show it whole."""
    import io

    from rich.console import Console

    from flowsh.state import RunRecord
    from flowsh.ui import TTYReporter

    r = TTYReporter()
    buf = io.StringIO()
    r.console = Console(file=buf, width=120, color_system=None, force_terminal=False)
    run = RunRecord(run_id="r", workflow="w", file=None, definition_hash="", params={},
                    step_names=["sync"])
    run.steps = {"sync[us]": StepRecord("sync[us]"), "sync": StepRecord("sync", items=["eu", "us"]),
                 "sync[eu]": StepRecord("sync[eu]")}
    r.run = run
    r.console.print(r._render())
    r.step_finished(run, StepRecord("sync", status=FAILED, attempts=1,
                                    message="1 of 2 items failed: sync[us]"))
    rows = [line.split()[1] for line in buf.getvalue().splitlines()[1:4]]
    assert rows == ["sync", "sync[eu]", "sync[us]"]
    assert "1 of 2 items failed: sync[us]" in buf.getvalue()
