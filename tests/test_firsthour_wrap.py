"""`flowsh wrap --ping URL` against a real HTTP server on loopback, and `--skip-quietly`."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import run_cli
from tests.notify_servers import HTTPRecorder, http_server_fixture  # noqa: F401

FLOWSH = [sys.executable, "-m", "flowsh"]


def test_ping_start_then_success(http_server: HTTPRecorder, tmp_path: Path) -> None:
    url = f"{http_server.url}/ping/abc-123"
    r = run_cli("wrap", "--ping", url, "--", "bash", "-c", "echo all good", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    paths = [q.path for q in http_server.requests]
    assert paths == ["/ping/abc-123/start", "/ping/abc-123"]
    assert all(q.method == "POST" for q in http_server.requests)
    assert b"all good" in http_server.requests[1].body


def test_ping_failure_sends_exit_code_and_output_tail(http_server: HTTPRecorder,
                                                      tmp_path: Path) -> None:
    url = f"{http_server.url}/ping/abc-123/"  # a trailing slash is tolerated
    r = run_cli("wrap", "--ping", url, "--", "bash", "-c",
                "seq 1 20000; echo 'disk full' >&2; exit 7", cwd=tmp_path)
    assert r.returncode == 7
    start, end = http_server.requests
    assert start.path == "/ping/abc-123/start"
    assert end.path == "/ping/abc-123/7"
    assert end.body.endswith(b"disk full\n")
    assert len(end.body) <= 10_000 and b"\n20000\n" in end.body  # the tail, not the head


def test_ping_unreachable_warns_and_keeps_the_exit_code(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run_cli("wrap", "--ping", f"http://127.0.0.1:{port}/x", "--", "true", cwd=tmp_path)
    assert r.returncode == 0
    assert "warning: --ping http://127.0.0.1:" in r.stderr
    r = run_cli("wrap", "--ping", "hc-ping.com/x", "--", "true", cwd=tmp_path)
    assert r.returncode == 2 and "http(s) URL" in r.stderr


def test_skip_quietly_and_quiet_on_success_are_silent_on_a_lock_skip(
    http_server: HTTPRecorder, tmp_path: Path
) -> None:
    first = subprocess.Popen([*FLOWSH, "wrap", "--name", "locked", "--", "bash", "-c",
                              "touch started; while [ ! -e release ]; do sleep 0.05; done"],
                             cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "started").exists():
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.02)
        loud = run_cli("wrap", "--name", "locked", "--", "touch", "x", cwd=tmp_path)
        assert loud.returncode == 75 and "already running" in loud.stderr
        for flag in ("--skip-quietly", "--quiet-on-success"):
            r = run_cli("wrap", "--name", "locked", flag, "--ping", http_server.url + "/p",
                        "--", "touch", "x", cwd=tmp_path)
            assert r.returncode == 75, flag
            assert r.stdout == "" and r.stderr == "", flag
        assert not (tmp_path / "x").exists()
        assert http_server.requests == []  # a skipped run is not a run: no ping
    finally:
        (tmp_path / "release").touch()
        first.wait(60)
