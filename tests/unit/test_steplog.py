"""flowsh.steplog: flowsh's own lines in a step's log, and re-masking it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flowsh.secrets import MASK, Masker
from flowsh.steplog import append, remask


def test_append_after_the_step_output(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"step output\n")
    append(log, "--- flowsh: attempt 2 ---\n")
    append(log, "more\n")
    assert log.read_text() == "step output\n--- flowsh: attempt 2 ---\nmore\n"


def test_append_creates_private_file(tmp_path: Path) -> None:
    log = tmp_path / "new.log"
    append(log, "x\n")
    assert log.read_text() == "x\n"
    assert log.stat().st_mode & 0o777 == 0o600


def test_append_refuses_a_symlink_with_a_warning(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "target"
    target.write_text("keep\n")
    link = tmp_path / "a.log"
    link.symlink_to(target)
    append(link, "x\n")  # O_NOFOLLOW: no write through the link, and no exception
    assert target.read_text() == "keep\n"
    assert "cannot write log" in capsys.readouterr().err


def test_append_to_missing_directory_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    append(tmp_path / "no" / "a.log", "x\n")
    assert f"cannot write log {tmp_path / 'no' / 'a.log'}" in capsys.readouterr().err


def test_remask_rewrites_secrets_keeping_other_bytes(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"token is s3cretvalue\nbinary \xff\nline3 s3cretvalue\n")
    ino = log.stat().st_ino
    remask(log, Masker(["s3cretvalue"]))
    mask = MASK.encode()
    assert log.read_bytes() == b"token is " + mask + b"\nbinary \xff\nline3 " + mask + b"\n"
    assert log.stat().st_ino != ino  # replaced atomically


def test_remask_leaves_a_clean_log_alone(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("nothing secret\n")
    ino = log.stat().st_ino
    remask(log, Masker(["s3cretvalue"]))
    assert log.stat().st_ino == ino and log.read_text() == "nothing secret\n"
    remask(tmp_path / "missing.log", Masker(["s3cretvalue"]))
    assert not (tmp_path / "missing.log").exists()
    assert sorted(os.listdir(tmp_path)) == ["a.log"]
