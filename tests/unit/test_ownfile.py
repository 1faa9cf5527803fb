"""flowsh.ownfile on real files and processes: made once 0600 whatever the umask, one
winner when two make it at once, and a file that is not the user's own refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flowsh.ownfile import NotOwn, make_once, read_own


def test_made_whole_with_mode_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        assert make_once(tmp_path / "k", "abc\n") is True
    finally:
        os.umask(old)
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600
    assert read_own(tmp_path / "k") == "abc"
    assert make_once(tmp_path / "k", "other\n") is False  # the first one stays
    assert read_own(tmp_path / "k") == "abc"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k"]  # no temporary left


def test_two_processes_making_it_at_once_agree_on_one(tmp_path: Path) -> None:
    code = ("import sys; from pathlib import Path; from flowsh.ownfile import make_once, "
            "read_own; p = Path(sys.argv[1]); make_once(p, sys.argv[2]); print(read_own(p))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "k"), f"v{i}"],
                              stdout=subprocess.PIPE, text=True) for i in range(6)]
    seen = {p.communicate()[0].strip() for p in procs}
    assert len(seen) == 1 and seen <= {f"v{i}" for i in range(6)}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k"]


def test_absent_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_own(tmp_path / "none")


@pytest.mark.parametrize("kind", ["readable", "symlink", "fifo", "directory"])
def test_not_our_own_private_file_is_refused(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "k"
    if kind == "readable":
        path.write_text("abc\n")
        path.chmod(0o644)
    elif kind == "symlink":
        target = tmp_path / "t"
        make_once(target, "abc\n")
        path.symlink_to(target)
    elif kind == "fifo":
        os.mkfifo(path, 0o600)  # must not block the open
    else:
        path.mkdir(mode=0o700)
    with pytest.raises(NotOwn) as exc:
        read_own(path)
    if kind == "readable":
        assert (exc.value.opened, str(exc.value)) == (True, "it is 644")
    elif kind == "symlink":
        assert exc.value.opened is False  # O_NOFOLLOW
    else:
        assert exc.value.opened is True and "not a regular file" in str(exc.value)
