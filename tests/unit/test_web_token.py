"""flowsh/web/token.py: the default UI token's file, made private from its first instant,
reused only while it stays private, one token however many servers start at once."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from flowsh.errors import UsageError
from flowsh.web.token import default_token


def test_made_0600_whatever_the_umask(home: Path) -> None:
    old = os.umask(0)
    try:
        token, path = default_token(home)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == token + "\n" and len(token) >= 40
    assert default_token(home) == (token, path)  # reused
    assert [p.name for p in home.iterdir() if p.name.startswith(".ui-token")] == []


def test_not_ours_or_not_private_refused(home: Path) -> None:
    _, path = default_token(home)
    path.chmod(0o640)
    with pytest.raises(UsageError, match=r"mode 0600 \(it is 640"):
        default_token(home)
    path.unlink()
    path.mkdir()
    with pytest.raises(UsageError, match="not a regular file"):
        default_token(home)


def test_servers_starting_together_share_one_token(home: Path) -> None:
    code = ("import sys; from pathlib import Path; from flowsh.web.token import default_token; "
            "print(default_token(Path(sys.argv[1]))[0])")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(home)], stdout=subprocess.PIPE,
                              text=True) for _ in range(6)]
    got = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert got == {(home / "ui-token").read_text().strip()}
