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


def test_a_fifo_is_refused_at_once(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    os.mkfifo(home / "ui-token", 0o600)
    with pytest.raises(UsageError, match="not a regular file"):
        default_token(home)  # would block in open() without O_NONBLOCK


@pytest.mark.parametrize("token, why", [
    ("short-token", "11 characters; use at least 16"),
    ("päss€word-long-enough", "printable ASCII"),
    ("tab\tinside-a-long-token", "printable ASCII"),
])
def test_a_given_token_must_be_ascii_and_long(token: str, why: str) -> None:
    from flowsh.web.token import check_token

    with pytest.raises(UsageError, match=why):
        check_token(token, "FLOWSH_UI_TOKEN")
    assert check_token("a" * 16, "x") == "a" * 16


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.1", True), ("0x7f.1", True), ("LOCALHOST", True),
    ("localhost.", True), ("::1", True), ("[::1]", True), ("evil.example", False),
    ("10.0.0.1", False), ("0.0.0.0", False), ("", False),
])
def test_every_spelling_of_loopback(host: str, loopback: bool) -> None:
    from flowsh.web.config import is_loopback

    assert is_loopback(host) is loopback
