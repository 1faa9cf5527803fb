"""flowsh.survivors: finding a step's processes by their environment and stopping what a
dead runner left behind, on real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowsh.survivors import (
    become_subreaper,
    children,
    stop_leftovers,
    stop_orphan,
    tagged,
    zombie,
)
from tests.conftest import wait_dead

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def _wait_tagged(var: str, value: str, pid: int) -> None:
    end = time.monotonic() + 10
    while pid not in tagged(var, value) and time.monotonic() < end:
        time.sleep(0.02)
    assert pid in tagged(var, value)


@pytest.fixture
def step() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "30"], env={**ENV, "FLOWSH_RUN_ID": "unit-run-1"},
                            start_new_session=True)
    try:
        _wait_tagged("FLOWSH_RUN_ID", "unit-run-1", proc.pid)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_tagged_finds_exact_values_only(step: subprocess.Popen[bytes]) -> None:
    assert step.pid in tagged("FLOWSH_RUN_ID", "unit-run-1")
    assert step.pid not in tagged("FLOWSH_RUN_ID", "unit-run")  # a prefix is not the value
    assert os.getpid() not in tagged("PATH", ENV["PATH"])  # never this process


def test_stop_orphan_only_for_its_run(step: subprocess.Popen[bytes]) -> None:
    assert not stop_orphan(step.pid, "another-run", 0.3)  # a recycled pid is never touched
    assert step.poll() is None
    assert stop_orphan(step.pid, "unit-run-1", 0.3)
    assert step.wait(timeout=10) == -signal.SIGTERM


def test_stop_orphan_of_a_gone_pid() -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert not stop_orphan(proc.pid, "unit-run-1", 0.3)


def test_stop_leftovers_reaches_what_left_the_group() -> None:
    sh = subprocess.Popen(["bash", "-c", "setsid sleep 30 & echo $!; wait"],
                          env={**ENV, "FLOWSH_RUN_ID": "unit-run-2"}, stdout=subprocess.PIPE,
                          start_new_session=True)
    assert sh.stdout is not None
    child = int(sh.stdout.readline())
    try:
        _wait_tagged("FLOWSH_RUN_ID", "unit-run-2", child)
        found = stop_leftovers("unit-run-2", 0.5)
        assert child in found and sh.pid in found
        assert wait_dead(child)
        assert tagged("FLOWSH_RUN_ID", "unit-run-2") == []
    finally:
        sh.wait(timeout=10)
    assert stop_leftovers("unit-run-2", 0.1) == []


def test_become_subreaper_on_and_off() -> None:
    assert become_subreaper(True) is True
    assert become_subreaper(False) is True


def test_tagged_finds_a_call_steps_token_in_its_child_runs_processes() -> None:
    """A child run's step carries its own FLOWSH_STEP_TOKEN; the call step's (and those
    above it) stay in FLOWSH_CALL_TOKENS, word for word."""
    from flowsh.survivors import OUTER_TOKENS_VAR, TOKEN_VAR

    proc = subprocess.Popen(["sleep", "30"], env={**ENV, TOKEN_VAR: "inner1",
                                                  OUTER_TOKENS_VAR: "outer1 outer22"},
                            start_new_session=True)
    try:
        _wait_tagged(TOKEN_VAR, "inner1", proc.pid)
        assert proc.pid in tagged(TOKEN_VAR, "outer1")
        assert proc.pid in tagged(TOKEN_VAR, "outer22")
        assert proc.pid not in tagged(TOKEN_VAR, "outer2")  # a prefix is not the token
        assert proc.pid not in tagged("FLOWSH_RUN_ID", "outer1")  # only for step tokens
    finally:
        proc.kill()
        proc.wait()


def test_children_lists_this_processes_children_until_reaped() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        kids = children()
        assert kids is not None and proc.pid in kids
        grandchild = subprocess.Popen(["bash", "-c", "sleep 30 & echo $!; wait"],
                                      stdout=subprocess.PIPE)
        assert grandchild.stdout is not None
        inner = int(grandchild.stdout.readline())
        kids = children() or set()
        assert grandchild.pid in kids and inner not in kids  # a grandchild is not listed
        os.kill(inner, signal.SIGKILL)
        grandchild.wait(timeout=10)
        assert grandchild.stdout.read() == b""
        grandchild.stdout.close()
    finally:
        proc.kill()
        proc.wait()
    kids = children()
    assert kids is not None and proc.pid not in kids and grandchild.pid not in kids


def test_zombie_until_reaped() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    assert not zombie(proc.pid)
    proc.kill()
    end = time.monotonic() + 10
    while not zombie(proc.pid) and time.monotonic() < end:
        time.sleep(0.01)
    assert zombie(proc.pid)  # exited, not reaped yet
    proc.wait()
    assert not zombie(proc.pid)  # reaped: no longer a zombie



def _counting(tmp: Path, name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A shell busy in builtins (a TERM runs its trap at once) that writes a line per TERM
    to tmp/name, then "end" once its first trap is over: a second TERM that came while the
    trap ran runs the trap again before that "end"."""
    out = tmp / name
    script = (f"trap 'echo t >> {out}; sleep 0.3; g=1' TERM; g=0; touch {out}.up; "
              f"while [ $g = 0 ]; do :; done; echo end >> {out}")
    proc = subprocess.Popen(["bash", "-c", script], env={**ENV, **env},
                            start_new_session=True)
    end = time.monotonic() + 10
    while not Path(f"{out}.up").exists() and time.monotonic() < end:
        time.sleep(0.01)
    return proc


def test_signal_marked_terms_each_process_once(tmp_path: Path) -> None:
    """TIME-1: the group, then each marked process outside it; a process in the group is
    not signalled again (its trap ran twice); a `call:` child run's own steps (marked only
    through FLOWSH_CALL_TOKENS) get no TERM from here (their run passes it on), only the
    final KILL."""
    from flowsh.survivors import OUTER_TOKENS_VAR, TOKEN_VAR, signal_marked

    leader = _counting(tmp_path, "leader", {TOKEN_VAR: "tok"})
    away = _counting(tmp_path, "away", {TOKEN_VAR: "tok"})  # setsid'd: its own group
    inner = _counting(tmp_path, "inner", {TOKEN_VAR: "childs", OUTER_TOKENS_VAR: "tok"})
    procs = [leader, away, inner]
    try:
        found = signal_marked(leader.pid, TOKEN_VAR, "tok", signal.SIGTERM)
        assert {p.pid for p in procs} <= set(found)  # a trap's sleep may be found too
        assert leader.wait(timeout=10) == 0 and away.wait(timeout=10) == 0
        assert (tmp_path / "leader").read_text() == "t\nend\n"
        assert (tmp_path / "away").read_text() == "t\nend\n"
        assert inner.poll() is None and not (tmp_path / "inner").exists()
        assert signal_marked(leader.pid, TOKEN_VAR, "tok", signal.SIGKILL) == [inner.pid]
        assert inner.wait(timeout=10) == -signal.SIGKILL
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_signal_marked_terms_what_a_dead_child_runner_left(tmp_path: Path) -> None:
    """CALL-2, TIME-1: a `call:` child run whose runner died (kill -9) has no one to pass
    TERM on to its steps: they get it from here, once (they got only the KILL, and their
    traps never ran). A grandchild run whose runner lives still gets it through that
    runner only."""
    from flowsh.survivors import OUTER_TOKENS_VAR, TOKEN_VAR, signal_marked

    orphan = _counting(tmp_path, "orphan", {TOKEN_VAR: "c1", OUTER_TOKENS_VAR: "tok"})
    runner = _counting(tmp_path, "runner", {TOKEN_VAR: "c2", OUTER_TOKENS_VAR: "up tok"})
    deep = _counting(tmp_path, "deep", {TOKEN_VAR: "g1", OUTER_TOKENS_VAR: "up tok c2"})
    procs = [orphan, runner, deep]
    try:
        found = signal_marked(None, TOKEN_VAR, "tok", signal.SIGTERM)
        assert {p.pid for p in procs} <= set(found)  # a trap's sleep may be found too
        assert orphan.wait(timeout=10) == 0 and runner.wait(timeout=10) == 0
        assert (tmp_path / "orphan").read_text() == "t\nend\n"
        assert (tmp_path / "runner").read_text() == "t\nend\n"
        assert deep.poll() is None and not (tmp_path / "deep").exists()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_stop_orphan_terms_each_process_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TIME-1 on a resume after a crash: a step the dead runner left running gets SIGTERM
    once (to its group, then to what left the group), not once from each: its trap ran
    twice. Two TERMs that come before bash runs the trap make one run of it, so the
    signals sent are also counted (and sent: os.kill is watched, not replaced)."""
    sent: list[tuple[int, int]] = []
    real_kill = os.kill

    def kill(pid: int, sig: int) -> None:
        sent.append((pid, sig))
        real_kill(pid, sig)

    monkeypatch.setattr(os, "kill", kill)
    leader = _counting(tmp_path, "leader", {"FLOWSH_RUN_ID": "unit-run-3"})
    away = _counting(tmp_path, "away", {"FLOWSH_RUN_ID": "unit-run-3"})
    # In a thread: these are this test's children, reaped here (a zombie leader would
    # keep its group, and stop_orphan waiting, for the whole grace period).
    stopped: list[bool] = []
    stopper = threading.Thread(
        target=lambda: stopped.append(stop_orphan(leader.pid, "unit-run-3", 10)))
    stopper.start()
    try:
        assert leader.wait(timeout=10) == 0 and away.wait(timeout=10) == 0
        stopper.join(timeout=30)
        assert stopped == [True]
        assert (tmp_path / "leader").read_text() == "t\nend\n"
        assert (tmp_path / "away").read_text() == "t\nend\n"
        assert (leader.pid, signal.SIGTERM) not in sent  # it had the group's
        assert (away.pid, signal.SIGTERM) in sent
    finally:
        for proc in (leader, away):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_signal_marked_by_another_mark_leaves_a_live_child_run_to_its_runner(
        tmp_path: Path) -> None:
    """The celery supervisor marks a step's processes with the task's id: a `call:` step's
    child runner and the child's steps all carry it. TERM goes to the runner only (it
    passes it on: its steps had TERM twice); SIGKILL to all."""
    from flowsh.survivors import OUTER_TOKENS_VAR, TOKEN_VAR, signal_marked

    mark = {"FLOWSH_CELERY_TASK": "task-1"}
    runner = _counting(tmp_path, "runner", {**mark, TOKEN_VAR: "t1"})
    step = _counting(tmp_path, "step", {**mark, TOKEN_VAR: "c1", OUTER_TOKENS_VAR: "t1"})
    try:
        found = signal_marked(None, "FLOWSH_CELERY_TASK", "task-1", signal.SIGTERM)
        assert {runner.pid, step.pid} <= set(found)
        assert runner.wait(timeout=10) == 0
        assert step.poll() is None and not (tmp_path / "step").exists()
        assert step.pid in signal_marked(None, "FLOWSH_CELERY_TASK", "task-1", signal.SIGKILL)
        assert step.wait(timeout=10) == -signal.SIGKILL
    finally:
        for proc in (runner, step):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
