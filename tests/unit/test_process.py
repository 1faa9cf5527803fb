"""flowsh.process: the local executor running real bash processes."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowsh.errors import UsageError
from flowsh.executor import EXIT_TIMEOUT, Outcome, StepRequest
from flowsh.process import LocalExecutor
from flowsh.secrets import Masker
from flowsh.survivors import TOKEN_VAR
from tests.conftest import alive, wait_dead

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}


def req(tmp_path: Path, script: str, key: str = "s", **kw: object) -> StepRequest:
    return StepRequest(key=key, argv=["bash", "-c", script], cwd=str(tmp_path),
                       env={**ENV, **kw.pop("env", {})},  # type: ignore[dict-item]
                       log_path=str(tmp_path / f"{key}.log"), **kw)  # type: ignore[arg-type]


def collect(ex: LocalExecutor, n: int = 1, deadline: float = 30) -> dict[str, Outcome]:
    got: dict[str, Outcome] = {}
    end = time.monotonic() + deadline
    while len(got) < n and time.monotonic() < end:
        got.update(ex.wait(1.0))
    assert len(got) == n, f"only {got} finished"
    return got


@pytest.fixture
def lines() -> list[tuple[str, str]]:
    return []


@pytest.fixture
def ex(lines: list[tuple[str, str]]) -> Iterator[LocalExecutor]:
    e = LocalExecutor(on_output=lambda k, line: lines.append((k, line)),
                      mask=Masker(["hunter22"]))
    try:
        yield e
    finally:
        e.close()


@pytest.mark.parametrize("code", [0, 1, 3, 255])
def test_exit_codes(ex: LocalExecutor, tmp_path: Path, code: int) -> None:
    ex.start(req(tmp_path, f"exit {code}"))
    out = collect(ex)["s"]
    assert out.exit_code == code and out.ok is (code == 0)
    assert out.ended_at >= out.started_at


def test_output_streams_masked_to_callback_and_log(ex: LocalExecutor, tmp_path: Path,
                                                   lines: list[tuple[str, str]]) -> None:
    ex.start(req(tmp_path, "echo out; echo err >&2; echo pw=hunter22; printf tail"))
    assert collect(ex)["s"].ok
    assert lines == [("s", "out"), ("s", "err"), ("s", "pw=***"), ("s", "tail")]
    assert (tmp_path / "s.log").read_text() == "out\nerr\npw=***\ntail\n"  # the last line is ended


def test_a_secret_split_across_writes_is_still_masked(ex: LocalExecutor, tmp_path: Path,
                                                     lines: list[tuple[str, str]]) -> None:
    """The pipe delivers `pw=hunt` and `er22 done` in two reads; the line is masked whole."""
    ex.start(req(tmp_path, "printf 'pw=hunt'; sleep 0.2; printf 'er22 done\\n'"))
    collect(ex)
    assert lines == [("s", "pw=*** done")]
    assert (tmp_path / "s.log").read_text() == "pw=*** done\n"


def test_a_secret_across_the_64k_piece_boundary_is_masked(ex: LocalExecutor, tmp_path: Path,
                                                          lines: list[tuple[str, str]]) -> None:
    # One write of 65,540 bytes and the secret's first half, then (two seconds later) its
    # second half: the runner has passed on a piece ending in `hunt` before `er22` arrives.
    ex.start(req(tmp_path, "printf '%s' \"$(head -c 65540 /dev/zero | tr '\\0' x)hunt\"; "
                           "sleep 2; printf 'er22\\n'"))
    collect(ex)
    log = (tmp_path / "s.log").read_text()
    assert "hunter22" not in log.replace("\n", "")
    assert "hunter22" not in "".join(t for _, t in lines)


def test_env_cwd_and_token(ex: LocalExecutor, tmp_path: Path, lines: list[tuple[str, str]]) -> None:
    ex.start(req(tmp_path, f'echo "$X|$PWD|${{#{TOKEN_VAR}}}"', env={"X": "y z"}))
    collect(ex)
    assert lines == [("s", f"y z|{tmp_path}|16")]


def test_timeout_kills_the_group(ex: LocalExecutor, tmp_path: Path) -> None:
    ex.start(req(tmp_path, "sleep 30 & echo $! > child; wait", timeout=0.5, kill_grace=0.5))
    out = collect(ex)["s"]
    assert out.timed_out and out.exit_code == EXIT_TIMEOUT and out.describe() == "timed out"
    assert wait_dead(int((tmp_path / "child").read_text()))


def test_killed_by_signal(ex: LocalExecutor, tmp_path: Path) -> None:
    ex.start(req(tmp_path, "kill -TERM $$"))
    out = collect(ex)["s"]
    assert out.signal == signal.SIGTERM and out.exit_code == 128 + signal.SIGTERM
    assert out.describe() == "killed by SIGTERM"


def test_cancel_all_interrupts_running_jobs(ex: LocalExecutor, tmp_path: Path) -> None:
    for k in ("a", "b"):
        ex.start(req(tmp_path, "trap '' TERM; sleep 30", key=k, kill_grace=0.3))
    assert ex.running() == 2
    ex.cancel_all()
    got = collect(ex, 2)
    assert all(o.interrupted and not o.ok for o in got.values())


def test_leftovers_stopped_when_the_step_exits(ex: LocalExecutor, tmp_path: Path) -> None:
    ex.start(req(tmp_path, "setsid sleep 30 >/dev/null 2>&1 & echo $! > child", kill_grace=0.5))
    assert collect(ex)["s"].ok
    assert wait_dead(int((tmp_path / "child").read_text()))


def test_leftovers_stopped_while_another_step_runs(ex: LocalExecutor, tmp_path: Path) -> None:
    ex.start(req(tmp_path, "sleep 30", key="long", kill_grace=0.2))
    ex.start(req(tmp_path, "setsid sleep 30 >/dev/null 2>&1 & echo $! > child", key="s",
                 kill_grace=0.5))
    assert collect(ex)["s"].ok
    assert wait_dead(int((tmp_path / "child").read_text()))
    assert ex.running() == 1


def test_no_proc_scan_when_nothing_is_left_beside_a_running_step(
        ex: LocalExecutor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A step that leaves nothing costs no /proc scan while others run (a fan-out at -j8
    paid one at every end); the real scan, counted."""
    import flowsh.survivors

    scans: list[str] = []
    real = flowsh.survivors.tagged

    def counted(var: str, value: str) -> list[int]:
        scans.append(value)
        return real(var, value)

    monkeypatch.setattr(flowsh.survivors, "tagged", counted)
    ex.start(req(tmp_path, "sleep 30", key="long", kill_grace=0.2))
    for i in range(3):
        ex.start(req(tmp_path, "true", key=f"quick{i}"))
    got = collect(ex, 3)
    assert all(o.ok for o in got.values())
    assert scans == []


def test_keep_children_leaves_a_daemon(ex: LocalExecutor, tmp_path: Path) -> None:
    ex.start(req(tmp_path, "sleep 30 >/dev/null 2>&1 & echo $! > child", keep_children=True))
    assert collect(ex)["s"].ok
    pid = int((tmp_path / "child").read_text())
    try:
        assert alive(pid)
    finally:
        os.kill(pid, signal.SIGKILL)
        wait_dead(pid)


def test_start_failures_are_outcomes(ex: LocalExecutor, tmp_path: Path) -> None:
    ex.start(StepRequest(key="nope", argv=["/no/such/prog"], cwd=str(tmp_path), env=ENV,
                         log_path=str(tmp_path / "n.log")))
    ex.start(StepRequest(key="cwd", argv=["true"], cwd=str(tmp_path / "missing"), env=ENV,
                         log_path=str(tmp_path / "c.log")))
    got = collect(ex, 2)
    assert got["nope"].exit_code == 127 and "cannot start '/no/such/prog'" in got["nope"].describe()
    assert got["cwd"].error == f"workdir {tmp_path / 'missing'} does not exist"


def test_stdin_file_and_discard_stdout(ex: LocalExecutor, tmp_path: Path,
                                       lines: list[tuple[str, str]]) -> None:
    (tmp_path / "in").write_text("from stdin\n")
    ex.start(req(tmp_path, "cat; echo to-stderr >&2", stdin=str(tmp_path / "in"),
                 discard_stdout=True))
    collect(ex)
    assert lines == [("s", "to-stderr")]


def test_wake_returns_an_empty_wait(ex: LocalExecutor, tmp_path: Path) -> None:
    ex.start(req(tmp_path, "sleep 30", kill_grace=0.2))
    ex.wake()
    t0 = time.monotonic()
    assert ex.wait(20) == []
    assert time.monotonic() - t0 < 10


def test_no_executor_options() -> None:
    with pytest.raises(UsageError, match="takes no executor_options"):
        LocalExecutor(workers=2)


def _program(d: Path, says: str) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / "prog").write_text(f"#!/bin/sh\necho {says}\n")
    (d / "prog").chmod(0o755)


def test_program_found_once_per_path_and_again_when_gone(
        ex: LocalExecutor, tmp_path: Path, lines: list[tuple[str, str]]) -> None:
    """The step's program is looked up on its PATH once per run; a file removed since is
    looked up again (the next PATH entry that has it), as Popen's own search would."""
    first, second = tmp_path / "first", tmp_path / "second"
    _program(first, "one")
    _program(second, "two")
    env = {"PATH": f"{first}:{second}:{ENV['PATH']}"}
    for key in ("a", "b"):
        ex.start(StepRequest(key=key, argv=["prog"], cwd=str(tmp_path), env=env,
                             log_path=str(tmp_path / f"{key}.log")))
        collect(ex)
    (first / "prog").unlink()
    ex.start(StepRequest(key="c", argv=["prog"], cwd=str(tmp_path), env=env,
                         log_path=str(tmp_path / "c.log")))
    assert collect(ex)["c"].exit_code == 0
    assert lines == [("a", "one"), ("b", "one"), ("c", "two")]


def test_program_on_a_relative_path_entry_is_found_from_the_step_cwd(
        ex: LocalExecutor, tmp_path: Path, lines: list[tuple[str, str]]) -> None:
    _program(tmp_path / "work" / "bin", "here")
    ex.start(StepRequest(key="s", argv=["prog"], cwd=str(tmp_path / "work"),
                         env={"PATH": f"bin:{ENV['PATH']}"}, log_path=str(tmp_path / "s.log")))
    assert collect(ex)["s"].exit_code == 0
    assert lines == [("s", "here")]


def test_program_not_found_is_popens_error(ex: LocalExecutor, tmp_path: Path) -> None:
    ex.start(StepRequest(key="s", argv=["no-such-prog-x"], cwd=str(tmp_path), env=ENV,
                         log_path=str(tmp_path / "s.log")))
    out = collect(ex)["s"]
    assert out.exit_code == 127 and out.error == \
        "cannot start 'no-such-prog-x': No such file or directory"
