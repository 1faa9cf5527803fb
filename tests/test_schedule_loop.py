"""`flowsh scheduler run` as a real process with per-second schedules (croniter's
six-field form): it fires, skips overlaps, handles misfires, and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

QUICK = """\
name: tick
schedule: "* * * * * *"
steps:
  - {name: a, run: 'echo tick >> ticks.txt'}
"""

SLOW = """\
name: slow
schedule: "* * * * * *"
overlap: skip
kill_grace: 0.2s
steps:
  - {name: a, run: 'touch started; sleep 30'}
"""


@pytest.fixture
def scheduler(tmp_path: Path) -> Iterator[Callable[..., tuple[subprocess.Popen[bytes], Path]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(flow_text: str, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
        flow = tmp_path / "flow.yaml"
        flow.write_text(flow_text)
        out = tmp_path / "scheduler.out"
        with out.open("wb") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "flowsh", "scheduler", "run", str(flow), *args],
                stdout=fh, stderr=subprocess.STDOUT, env=os.environ.copy(),
            )
        procs.append(proc)
        return proc, out

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def _until(check: Callable[[], bool], what: str, proc: subprocess.Popen[bytes], out: Path,
           limit: float = 40.0) -> None:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if check():
            return
        assert proc.poll() is None, out.read_text()
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}:\n{out.read_text()}")


def test_fires_and_stops_cleanly(scheduler, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    proc, out = scheduler(QUICK)
    ticks = tmp_path / "ticks.txt"
    _until(lambda: ticks.exists() and len(ticks.read_text().split()) >= 2, "two runs", proc, out)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    text = out.read_text()
    assert "tick: started (scheduled)" in text and "exited 0" in text
    assert text.rstrip().endswith("scheduler stopped")


def test_overlap_skip_and_sigterm_stops_the_running_child(scheduler, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    proc, out = scheduler(SLOW)
    _until(lambda: "the previous run is still going (overlap: skip)" in out.read_text(),
           "an overlap skip", proc, out)
    # The skip only says the child process exists; it may still be importing flowsh (on a
    # loaded machine, for seconds) with no SIGTERM handler yet: wait until its step runs.
    _until(lambda: (tmp_path / "started").exists(), "the child's step to start", proc, out)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    text = out.read_text()
    assert "stopping: 1 run(s) still going get SIGTERM" in text
    assert "exited 130" in text  # the child recorded its run as interrupted


@pytest.mark.parametrize("policy", ["skip", "run-once"])
def test_misfire_policy(scheduler, tmp_path: Path, policy: str) -> None:  # type: ignore[no-untyped-def]
    proc, out = scheduler(QUICK, "--misfire", policy, "--grace", "0.5")
    _until(lambda: "first run at" in out.read_text(), "the scheduler to start", proc, out)
    # Freeze the scheduler past several fire times: the machine "slept".
    proc.send_signal(signal.SIGSTOP)
    time.sleep(2.5)
    proc.send_signal(signal.SIGCONT)
    expected = "misfire: skipped" if policy == "skip" else "running once"
    _until(lambda: expected in out.read_text(), expected, proc, out)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_usage_errors(cli, write_flow) -> None:  # type: ignore[no-untyped-def]
    none = write_flow("steps: [{name: a, run: 'true'}]\n")
    r = cli("scheduler", "run", str(none))
    assert r.returncode == 2 and "no `schedule`" in r.stderr
    r = cli("scheduler", "run", str(none), "--misfire", "later")
    assert r.returncode == 2 and "--misfire must be one of" in r.stderr
