"""flowsh.conditions: `if:` tests run by the real LocalExecutor, and their verdicts."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flowsh.conditions import IF_KEY, IfTests, Verdict
from flowsh.executor import Outcome
from flowsh.loader import load_workflow
from flowsh.process import LocalExecutor
from flowsh.state import FAILED, PENDING, StepRecord


@pytest.fixture
def ex() -> Iterator[LocalExecutor]:
    e = LocalExecutor()
    try:
        yield e
    finally:
        e.close()


def verdict(write_flow: Callable[..., Path], ex: LocalExecutor, test: str, tmp_path: Path,
            *, timeout: str | None = None, env: dict[str, str] | None = None,
            rec: StepRecord | None = None) -> tuple[Verdict, StepRecord]:
    extra = f"\n    timeout: {timeout}" if timeout else ""
    wf = load_workflow(write_flow(f"name: w\nsteps:\n  - name: s\n    run: 'true'\n"
                                  f"    if: {test!r}{extra}\n"))
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    tests = IfTests(wf, ex, run_dir)
    step = wf.step("s")
    base = {"PATH": os.environ["PATH"], **(env or {})}
    assert tests.start(step, base, tmp_path) is not None
    got: list[tuple[str, Outcome]] = []
    end = time.monotonic() + 30
    while not got and time.monotonic() < end:
        got = ex.wait(1.0)
    assert [k for k, _ in got] == [IF_KEY + "s"]
    rec = rec or StepRecord("s")
    v = tests.finish(step, rec, got[0][1])
    assert v.env == base and v.cwd == tmp_path
    assert not (run_dir / "s@if.log").exists()  # the test's own log is removed
    return v, rec


def test_exit_0_runs(write_flow: Callable[..., Path], ex: LocalExecutor, tmp_path: Path) -> None:
    v, rec = verdict(write_flow, ex, "bash -c 'exit 0'", tmp_path)
    assert v.action == "run" and rec.status == PENDING


def test_exit_1_skips(write_flow: Callable[..., Path], ex: LocalExecutor, tmp_path: Path) -> None:
    v, rec = verdict(write_flow, ex, "bash -c 'exit 1'", tmp_path)
    assert v.action == "skip" and rec.status == PENDING


@pytest.mark.parametrize("code", [2, 3, 127])
def test_other_codes_fail_the_step(write_flow: Callable[..., Path], ex: LocalExecutor,
                                   tmp_path: Path, code: int) -> None:
    v, rec = verdict(write_flow, ex, f"echo why-{code} >&2; bash -c 'exit {code}'", tmp_path)
    assert v.action == "failed" and rec.status == FAILED and rec.exit_code == code
    assert rec.message == f"the `if` test failed (exit {code}): why-{code}"
    log = (tmp_path / "run" / "s.log").read_text()
    assert f"failed (exit {code})" in log and f"why-{code}" in log


def test_a_test_sees_the_environment_and_its_stdout_goes_nowhere(
        write_flow: Callable[..., Path], ex: LocalExecutor, tmp_path: Path) -> None:
    v, _ = verdict(write_flow, ex, 'echo noise; echo X=1 >> "$FLOWSH_OUTPUT"; [ "$DAY" = mon ]',
                   tmp_path, env={"DAY": "mon"})
    assert v.action == "run"
    v, _ = verdict(write_flow, ex, '[ "$DAY" = mon ]', tmp_path, env={"DAY": "tue"})
    assert v.action == "skip"


def test_signal_and_timeout_fail(write_flow: Callable[..., Path], ex: LocalExecutor,
                                 tmp_path: Path) -> None:
    v, rec = verdict(write_flow, ex, "kill -KILL $$", tmp_path)
    assert v.action == "failed" and rec.signal == 9 and rec.exit_code is None
    assert "(signal SIGKILL)" in (rec.message or "")
    v, rec = verdict(write_flow, ex, "sleep 30", tmp_path, timeout="300ms")
    assert v.action == "failed" and "(timed out)" in (rec.message or "")


def test_interrupted(write_flow: Callable[..., Path], ex: LocalExecutor, tmp_path: Path) -> None:
    wf = load_workflow(write_flow("name: w\nsteps:\n  - name: s\n    run: 'true'\n    if: sleep 30\n"))
    tests = IfTests(wf, ex, tmp_path)
    tests.start(wf.step("s"), {"PATH": os.environ["PATH"]}, tmp_path)
    ex.cancel_all()
    got: list[tuple[str, Outcome]] = []
    end = time.monotonic() + 30
    while not got and time.monotonic() < end:
        got = ex.wait(1.0)
    assert tests.finish(wf.step("s"), StepRecord("s"), got[0][1]).action == "interrupted"
