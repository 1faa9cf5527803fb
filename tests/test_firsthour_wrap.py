"""`flowsh wrap --ping URL` against a real HTTP server on loopback, and `--skip-quietly`."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from flowsh.ping import Pinger
from tests.conftest import run_cli
from tests.notify_servers import HTTPRecorder, http_server_fixture  # noqa: F401

FLOWSH = [sys.executable, "-m", "flowsh"]


def _split(path: str) -> tuple[str, str]:
    """The ping's path and its `rid` (a UUID: healthchecks refuses anything else)."""
    import uuid
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(path)
    (rid,) = parse_qs(parts.query)["rid"]
    assert str(uuid.UUID(rid)) == rid
    return parts.path, rid


def test_ping_start_then_success(http_server: HTTPRecorder, tmp_path: Path) -> None:
    url = f"{http_server.url}/ping/abc-123"
    r = run_cli("wrap", "--ping", url, "--", "bash", "-c", "echo all good", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (start, rid1), (end, rid2) = [_split(q.path) for q in http_server.requests]
    assert (start, end) == ("/ping/abc-123/start", "/ping/abc-123")
    assert rid1 == rid2  # one run: healthchecks pairs the start with its own end
    assert all(q.method == "POST" for q in http_server.requests)
    assert b"all good" in http_server.requests[1].body


def test_ping_failure_sends_exit_code_and_output_tail(http_server: HTTPRecorder,
                                                      tmp_path: Path) -> None:
    url = f"{http_server.url}/ping/abc-123/"  # a trailing slash is tolerated
    r = run_cli("wrap", "--ping", url, "--", "bash", "-c",
                "seq 1 20000; echo 'disk full' >&2; exit 7", cwd=tmp_path)
    assert r.returncode == 7
    start, end = http_server.requests
    assert _split(start.path)[0] == "/ping/abc-123/start"
    assert _split(end.path)[0] == "/ping/abc-123/7"
    assert end.body.endswith(b"disk full\n")
    assert len(end.body) <= 10_000 and b"\n20000\n" in end.body  # the tail, not the head


def test_ping_suffix_goes_in_the_path_before_the_query(http_server: HTTPRecorder,
                                                       tmp_path: Path) -> None:
    """rt18 #8: `?create=1` came before `/start` and `/1`: the server saw two success
    pings (path /ping/KEY/backup), so a failing job was reported healthy."""
    url = f"{http_server.url}/ping/KEY/backup?create=1&rid=a%2Fb"
    r = run_cli("wrap", "--ping", url, "--", "false", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert [q.path for q in http_server.requests] == [
        "/ping/KEY/backup/start?create=1&rid=a%2Fb", "/ping/KEY/backup/1?create=1&rid=a%2Fb"]
    r = run_cli("wrap", "--ping", f"{http_server.url}/ping/KEY/backup/?create=1", "--", "true",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    got = [q.path.split("&rid=")[0] for q in http_server.requests[2:]]
    assert got == ["/ping/KEY/backup/start?create=1", "/ping/KEY/backup?create=1"]
    assert len({_split(q.path)[1] for q in http_server.requests[2:]}) == 1


def test_rid_is_a_stable_uuid_per_run() -> None:
    from flowsh.ping import rid_of, with_rid

    assert rid_of("20261205T020000-1a2b3c4d") == rid_of("20261205T020000-1a2b3c4d")
    assert rid_of("r1") != rid_of("r2")
    assert with_rid("https://hc/ping/k", "r1") == f"https://hc/ping/k?rid={rid_of('r1')}"
    assert with_rid("https://hc/ping/k?rid=mine", "r1") == "https://hc/ping/k?rid=mine"
    assert with_rid("https://hc/ping/k", None) == "https://hc/ping/k"


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


class RawServer:
    """A TCP server on loopback that answers every connection with `answer(conn)`."""

    def __init__(self, answer: Callable[[socket.socket], None]) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/ping/x"
        self.hits = 0
        self.answer = answer
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.hits += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            with contextlib.suppress(OSError):
                self.answer(conn)

    def close(self) -> None:
        self.sock.close()


def test_ping_to_a_server_that_is_not_http_keeps_the_job_and_its_exit_code(
    tmp_path: Path,
) -> None:
    # http.client raises BadStatusLine / LineTooLong, which are not OSError: they used to
    # escape as a traceback at /start, so the command never ran.
    answers = [lambda c: c.sendall(b"NOT HTTP AT ALL\r\n\r\n"),
               lambda c: c.sendall(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000 + b"\r\n\r\n")]
    for answer in answers:
        server = RawServer(answer)
        try:
            r = run_cli("wrap", "--ping", server.url, "--", "bash", "-c",
                        "echo ran >> ran.txt; exit 7", cwd=tmp_path)
        finally:
            server.close()
        assert r.returncode == 7, r.stderr
        assert "Traceback" not in r.stderr
        assert r.stderr.count("flowsh: warning: --ping ") == 2, r.stderr
    assert (tmp_path / "ran.txt").read_text() == "ran\nran\n"


def test_ping_gives_up_on_a_server_that_trickles_its_answer() -> None:
    # urllib's timeout is per socket read: a byte of the answer every 0.2 s never trips it.
    stop = threading.Event()

    def trickle(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
        while not stop.wait(0.2):
            conn.sendall(b"x")

    server = RawServer(trickle)
    pinger = threading.Thread(target=Pinger(server.url, timeout=1.0).send, args=("/start",),
                              daemon=True)
    try:
        pinger.start()
        pinger.join(30)  # 1 s asked for; generous for a loaded machine, not forever
        gave_up = not pinger.is_alive()
    finally:
        stop.set()
        server.close()
    assert server.hits == 1
    assert gave_up


def test_wrap_log_that_cannot_be_written_keeps_the_exit_code_and_the_ping(
    http_server: HTTPRecorder, tmp_path: Path
) -> None:
    """Review of issue 18: `wrap --log` followed a symlink, and a write error after the run
    (disk full) replaced the command's exit code with 3 and the failure ping was never sent."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / "link.log").symlink_to(victim)
    r = run_cli("wrap", "--log", str(tmp_path / "link.log"), "--", "touch", "ran",
                cwd=tmp_path)
    assert r.returncode == 3 and "is a symbolic link" in r.stderr
    assert victim.read_text() == "precious\n" and not (tmp_path / "ran").exists()
    if not Path("/dev/full").exists():
        return
    r = run_cli("wrap", "--log", "/dev/full", "--ping", http_server.url + "/p", "--",
                "bash", "-c", "echo out; exit 6", cwd=tmp_path)
    assert r.returncode == 6, r.stderr
    assert "flowsh: warning: --log /dev/full: No space left on device" in r.stderr
    assert [_split(q.path)[0] for q in http_server.requests] == ["/p/start", "/p/6"]
