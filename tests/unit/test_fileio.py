"""flowsh.fileio: atomic_write and tail_lines on real files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from flowsh.fileio import atomic_write, tail_lines, temp_file


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_atomic_write_bytes_and_str(tmp_path: Path) -> None:
    p = tmp_path / "f"
    atomic_write(p, b"\x00\xffbytes\n")
    assert p.read_bytes() == b"\x00\xffbytes\n"
    atomic_write(p, "héllo\n")
    assert p.read_bytes() == "héllo\n".encode()
    assert os.listdir(tmp_path) == ["f"]  # no temp file left


def test_atomic_write_mode(tmp_path: Path) -> None:
    p = tmp_path / "f"
    atomic_write(p, "x")
    assert _mode(p) == 0o600
    atomic_write(p, "y", mode=0o644)
    assert _mode(p) == 0o644
    atomic_write(p, "z", mode=0o755)
    assert _mode(p) == 0o755 and p.read_text() == "z"


def test_atomic_write_replaces_not_rewrites(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_text("old")
    with open(p) as reader:  # a reader holding the old file sees the old content whole
        atomic_write(p, "new")
        assert reader.read() == "old"
    assert p.read_text() == "new"


def test_atomic_write_failure_leaves_target_and_no_temp(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_text("old")
    with pytest.raises(TypeError):
        atomic_write(p, 12345)  # type: ignore[arg-type]  # not str/bytes: fails mid-write
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["f"]


def test_atomic_write_missing_directory_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        atomic_write(tmp_path / "no" / "f", "x")


def test_atomic_write_into_a_directory_path_fails_cleanly(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(OSError):
        atomic_write(tmp_path / "d", "x")
    assert os.listdir(tmp_path) == ["d"]


def test_tail_lines(tmp_path: Path) -> None:
    p = tmp_path / "log"
    p.write_text("".join(f"line {i}\n" for i in range(10)))
    assert tail_lines(str(p), 3, 10_000) == (["line 7", "line 8", "line 9"], True)
    assert tail_lines(str(p), 100, 10_000) == ([f"line {i}" for i in range(10)], False)


def test_tail_lines_bounded_by_bytes(tmp_path: Path) -> None:
    p = tmp_path / "log"
    p.write_text("a" * 1000 + "\nlast\n")
    lines, cut = tail_lines(str(p), 10, 8)
    assert lines[-1] == "last" and cut
    assert sum(len(x) for x in lines) <= 8


def test_tail_lines_missing_or_none(tmp_path: Path) -> None:
    assert tail_lines(None, 5, 100) == ([], False)
    assert tail_lines(str(tmp_path / "nope"), 5, 100) == ([], False)


def test_tail_lines_bad_utf8_replaced(tmp_path: Path) -> None:
    p = tmp_path / "log"
    p.write_bytes(b"ok\n\xff\xfe\n")
    assert tail_lines(str(p), 5, 100) == (["ok", "\ufffd\ufffd"], False)


def test_temp_file_is_new_private_and_hidden(tmp_path: Path) -> None:
    fds, names = zip(*(temp_file(tmp_path, ".f.") for _ in range(50)), strict=True)
    try:
        assert len(set(names)) == 50
        for name in names:
            base = os.path.basename(name)
            assert base.startswith(".f.") and base.endswith(".tmp")
            assert os.stat(name).st_mode & 0o777 == 0o600
        os.write(fds[0], b"x")
        assert Path(names[0]).read_bytes() == b"x"
    finally:
        for fd in fds:
            os.close(fd)


def test_temp_file_draws_again_rather_than_open_what_is_there(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """O_EXCL and O_NOFOLLOW: a name already taken (here a planted symlink) is never
    opened; another is drawn."""
    draws = iter([b"\0" * 6, b"\0" * 6, b"\1" * 6])
    monkeypatch.setattr(os, "urandom", lambda n: next(draws))
    target = tmp_path / "victim"
    target.write_text("keep")
    os.symlink(target, tmp_path / ".v.000000000000.tmp")
    fd, name = temp_file(tmp_path, ".v.")
    os.close(fd)
    assert os.path.basename(name) == ".v.010101010101.tmp"
    assert target.read_text() == "keep"
