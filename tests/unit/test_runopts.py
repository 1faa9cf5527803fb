"""flowsh.runopts: RunOptions defaults and the Reporter base that shows nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from flowsh.loader import load_workflow
from flowsh.runopts import Reporter, RunOptions
from flowsh.state import RunRecord, StepRecord


def test_run_options_defaults_are_fresh_per_instance() -> None:
    a, b = RunOptions(), RunOptions()
    assert a.params == {} and a.plugin_options == {}
    a.params["X"] = "1"
    a.plugin_options["k"] = 1
    assert b.params == {} and b.plugin_options == {}
    assert (a.concurrency, a.state_url, a.backend, a.reporter, a.executor, a.overlap,
            a.lock_timeout, a.resume, a.only, a.run_id) == (None,) * 10


def test_reporter_base_accepts_every_event_and_shows_nothing(
        write_flow: Callable[..., Path], capsys: object) -> None:
    wf = load_workflow(write_flow("name: w\nsteps:\n  - {name: a, run: 'true'}\n"))
    r = Reporter()
    assert r.wants_output is False and r.prefix is False
    run = RunRecord.__new__(RunRecord)
    step = StepRecord("a")
    assert r.run_started(run, wf) is None
    assert r.step_started(run, step) is None
    assert r.step_output("a", "line") is None
    assert r.step_retrying(run, step, 1.0) is None
    assert r.step_finished(run, step) is None
    assert r.run_finished(run) is None
    out = capsys.readouterr()  # type: ignore[attr-defined]
    assert out.out == "" and out.err == ""


def test_a_reporter_subclass_overrides_what_it_needs() -> None:
    seen: list[str] = []

    class Lines(Reporter):
        wants_output = True

        def step_output(self, step: str, line: str) -> None:
            seen.append(f"{step}: {line}")

    opts = RunOptions(reporter=Lines(), params={"A": "1"})
    assert opts.reporter is not None and opts.reporter.wants_output
    opts.reporter.step_output("s", "hello")
    assert seen == ["s: hello"]
