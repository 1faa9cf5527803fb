"""flowsh.cronmode: chronic's rule, the kept --log, quiet lock skips."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from flowsh.cronmode import CronOutput, Spool, log_refusal, open_log
from flowsh.errors import EXIT_LOCKED, LockHeldError, StateError
from flowsh.state import FAILED, SUCCEEDED

from . import backend_cases as cases


def test_open_log_private_append_parents(tmp_path: Path) -> None:
    p = tmp_path / "a" / "b" / "run.log"
    with open_log(p) as fh:
        fh.write(b"one\n")
    with open_log(p) as fh:
        fh.write(b"two\n")
    assert p.read_bytes() == b"one\ntwo\n" and p.stat().st_mode & 0o777 == 0o600


def test_open_log_refuses_links_and_pipes(tmp_path: Path) -> None:
    (tmp_path / "target").write_text("")
    (tmp_path / "link.log").symlink_to(tmp_path / "target")
    with pytest.raises(StateError, match="is a symbolic link"):
        open_log(tmp_path / "link.log")
    os.mkfifo(tmp_path / "fifo.log")
    with pytest.raises(StateError, match="is a pipe"):
        open_log(tmp_path / "fifo.log")


def test_spool_keeps_everything_in_order(tmp_path: Path) -> None:
    s = Spool()
    big = "x" * 70_000 + "\n"
    s.write("first\n")
    s.write(big)
    s.write("last\n")
    with open(tmp_path / "out", "wb") as out:
        s.copy_to(out)
    s.close()
    assert (tmp_path / "out").read_text() == "first\n" + big + "last\n"


def test_log_refusal_line(tmp_path: Path) -> None:
    log = tmp_path / "cron.log"
    log_refusal(log, Path("/x/flow.yaml"), "no such file")
    assert re.fullmatch(r"=== \d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4} /x/flow.yaml: not run: "
                        r"no such file ===\n", log.read_text())


def test_log_refusal_unwritable_is_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "link").symlink_to(tmp_path / "t")
    log_refusal(tmp_path / "link", Path("f"), "bad")
    assert "warning: --log" in capsys.readouterr().err


def _run_with(out: CronOutput, status: str) -> None:
    rep = out.reporter()
    rep.step_output("s", "step said hello")
    run = cases.record("cr1")
    run.status = status  # type: ignore[assignment]
    with out.lock_guard("w"):
        pass
    out.finish(run)


def test_quiet_on_success_silent_when_it_succeeds(tmp_path: Path,
                                                  capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    log = tmp_path / "k.log"
    _run_with(CronOutput(quiet_on_success=True, log=log), SUCCEEDED)
    assert capfdbinary.readouterr().out == b""
    text = log.read_text()
    assert re.match(r"=== .* w: run cr1 succeeded ===\n", text) and "step said hello" in text


def test_quiet_on_success_prints_the_transcript_on_failure(
        capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    _run_with(CronOutput(quiet_on_success=True), FAILED)
    assert b"step said hello" in capfdbinary.readouterr().out


def test_skip_quietly_exits_75_and_logs_one_line(tmp_path: Path,
                                                 capfd: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "k.log"
    out = CronOutput(skip_quietly=True, log=log)
    out.reporter()
    with pytest.raises(SystemExit) as exc, out.lock_guard("w"):
        raise LockHeldError("workflow 'w' is already running")
    assert exc.value.code == EXIT_LOCKED
    assert capfd.readouterr().err == ""
    assert "w: skipped: workflow 'w' is already running ===" in log.read_text()


def test_a_plain_lock_skip_still_raises() -> None:
    out = CronOutput()
    assert not out.active
    with pytest.raises(LockHeldError), out.lock_guard("w"):
        raise LockHeldError("held")


def test_check_log_refuses_before_the_run(tmp_path: Path) -> None:
    (tmp_path / "l").symlink_to(tmp_path / "t")
    with pytest.raises(StateError):
        CronOutput(log=tmp_path / "l").check_log()
