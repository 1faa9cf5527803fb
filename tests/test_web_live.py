"""`flowsh serve` live and under attack: the dashboard's stream, a 1 GB log, a run deleted
while it is streamed, idle and slow clients, and runs of another host on a shared store."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.web_helpers import FLOW, Server, serve, sse_events, wait_for, wait_status


@pytest.fixture
def flows(tmp_path: Path) -> Path:
    d = tmp_path / "flows"
    d.mkdir()
    (d / "nightly.yaml").write_text(FLOW.format(flag=tmp_path / "flag"))
    (d / "slow.yaml").write_text(
        "name: slow\nsteps:\n  - name: wait\n    run: echo started; sleep 30\n")
    return d


def _flowsh(home: Path, *args: str) -> subprocess.Popen[bytes]:
    import os

    return subprocess.Popen([sys.executable, "-m", "flowsh", *args],
                            env={**os.environ, "FLOWSH_HOME": str(home)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_dashboard_stream_follows_runs_started_elsewhere(home: Path, flows: Path) -> None:
    with serve(home, "--workflows", str(flows)) as srv:
        seen: list[dict[str, Any]] = []

        def nightly(data: str) -> dict[str, Any]:
            return next(w for w in json.loads(data) if w["name"] == "nightly")

        def until(event: str, data: str) -> bool:
            if event != "workflows":
                return False
            seen.append(nightly(data))
            if len(seen) == 1:  # the state now: then a run starts from the CLI
                assert seen[0]["last_status"] is None
                _flowsh(home, "run", str(flows / "nightly.yaml"))
            return seen[-1]["last_status"] == "failed"

        sse_events(srv, "/api/v1/workflows/events", until, timeout=60)
        assert seen[-1]["last_run"] and seen[-1]["success_rate"] == 0.0
        # The fragment the dashboard swaps in says the same.
        cards = srv.client.get("/dashboard/cards").text
        assert 'data-workflow="nightly" data-status="failed"' in cards


def _log_of(srv: Server, home: Path, flows: Path) -> tuple[str, Path]:
    run_id = srv.post("/api/v1/runs", {"workflow": "nightly"}).json()["run_id"]
    wait_status(srv, run_id, ("failed",))
    return run_id, home / "runs" / run_id / "fetch.log"


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_1gib_log_is_tailed_and_streamed_in_bounded_memory(home: Path, flows: Path) -> None:
    with serve(home, "--workflows", str(flows)) as srv:
        run_id, log = _log_of(srv, home, flows)
        base = f"/api/v1/runs/{run_id}/steps/fetch/log"
        sse_events(srv, base + "/stream", lambda ev, _: ev == "end")  # warmed up
        before = _peak_rss_kib(srv.proc.pid)
        # 1 GiB of log, sparse (written in no time, no disk), then its last lines.
        with open(log, "r+b") as fh:
            fh.truncate(1 << 30)
            fh.seek(0, 2)
            fh.write(b"\nnext to last\nthe last line\n")
        size = log.stat().st_size

        tail = srv.client.get(base, params={"lines": 2}).json()
        assert tail["lines"] == ["next to last", "the last line"] and tail["truncated"]
        assert tail["size"] == size

        # A stream from the start: what is already written is sent from its last MiB on,
        # after a `skip` event saying how much was left out; then the log goes on live.
        got, received = [], 0
        with srv.client.stream("GET", base + "/stream", params={"offset": 0}) as resp:
            event = None
            for line in resp.iter_lines():
                received += len(line) + 1
                assert received < 16 << 20, "the stream sends the whole GiB"
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    got.append((event, json.loads(line[5:])))
                    if event == "end":
                        break
        assert got[0][0] == "skip" and got[0][1]["skipped"] > (1 << 30) - (2 << 20)
        text = "".join(d["text"] for ev, d in got if ev == "log")
        assert text.endswith("next to last\nthe last line\n") and len(text) <= 7 << 20
        assert got[-1] == ("end", {"status": "succeeded", "offset": size})
        # A reconnect from an offset near the end gets just what follows it.
        near = sse_events(srv, base + f"/stream?offset={size - 14}", lambda ev, _: ev == "end")
        assert [json.loads(d)["text"] for ev, d in near if ev == "log"] == ["the last line\n"]
        grown = _peak_rss_kib(srv.proc.pid) - before
        assert grown < 64 * 1024, f"the server's peak memory grew by {grown} KiB"


def test_a_run_deleted_while_streamed(home: Path, flows: Path) -> None:
    """`flowsh prune` (or a hand) deletes a run and its directory while a browser follows
    it: its streams end cleanly, the server logs no traceback."""
    import os
    import signal

    from flowsh.store import open_backend

    with serve(home, "--workflows", str(flows)) as srv:
        run_id = srv.post("/api/v1/runs", {"workflow": "slow"}).json()["run_id"]
        wait_status(srv, run_id, ("running",))
        results: dict[str, list[tuple[str, str]]] = {}
        started = {"log": threading.Event(), "run": threading.Event()}

        def follow(name: str, path: str) -> None:
            def until(event: str, data: str) -> bool:
                started[name].set()
                return event == "end"
            try:
                results[name] = sse_events(srv, path, until, timeout=60)
            except Exception as exc:  # what the test reports
                results[name] = [("error", repr(exc))]
                started[name].set()

        threads = [threading.Thread(target=follow, args=("log", f"/api/v1/runs/{run_id}/steps/wait/log/stream")),
                   threading.Thread(target=follow, args=("run", f"/api/v1/runs/{run_id}/events"))]
        for t in threads:
            t.start()
        assert started["log"].wait(30) and started["run"].wait(30)
        pid = srv.client.get(f"/api/v1/runs/{run_id}").json()["pid"]
        os.killpg(pid, signal.SIGKILL)  # its runner and step, gone at once
        backend = open_backend(None)
        try:
            backend.delete_runs([run_id])
        finally:
            backend.close()
        shutil.rmtree(home / "runs" / run_id)
        for t in threads:
            t.join(30)
            assert not t.is_alive(), "a stream of a deleted run never ends"
        assert results["log"][-1][0] == "end", results["log"]
        assert json.loads(results["log"][-1][1])["status"] == "gone"
        assert all(ev == "run" for ev, _ in results["run"]), results["run"]
        assert srv.client.get(f"/api/v1/runs/{run_id}").status_code == 404
        assert srv.client.get(f"/runs/{run_id}").status_code == 404
    out = "".join(p.read_text() for p in home.glob("serve-*.out"))
    assert "Traceback" not in out and "Exception" not in out, out


def test_idle_and_slow_clients_do_not_lock_others_out(home: Path, flows: Path) -> None:
    """More idle connections than the server has file descriptors, and a slowloris: the
    server closes each once its request deadline passes, and a newcomer gets in; a live
    stream, its request long complete, is left alone."""
    import resource
    import socket
    import time

    import httpx

    from flowsh.web.server import REQUEST_DEADLINE

    def few_fds() -> None:  # as on a host whose limit is low, and may not be raised
        resource.setrlimit(resource.RLIMIT_NOFILE, (160, 160))

    with serve(home, "--workflows", str(flows), preexec_fn=few_fds) as srv:
        port = int(srv.url.rsplit(":", 1)[1])
        run_id = srv.post("/api/v1/runs", {"workflow": "slow"}).json()["run_id"]
        stream: list[tuple[str, str]] = []

        def seen(event: str, data: str) -> bool:
            stream.append((event, data))
            return json.loads(data)["status"] == "interrupted"
        follower = threading.Thread(target=sse_events, args=(
            srv, f"/api/v1/runs/{run_id}/events", seen), kwargs={"timeout": 90})
        follower.start()
        wait_for(lambda: stream or None, 30, "the stream's first event")

        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(200)]
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        stop = threading.Event()

        def trickle() -> None:
            while not stop.wait(0.5):
                try:
                    slow.sendall(b"X-Slow: y\r\n")
                except OSError:
                    return
        threading.Thread(target=trickle, daemon=True).start()
        try:
            t0 = time.monotonic()
            with httpx.Client(headers={"Authorization": f"Bearer {srv.token}"},
                              timeout=REQUEST_DEADLINE * 3) as newcomer:
                assert newcomer.get(srv.url + "/api/v1/session").status_code == 200
            assert time.monotonic() - t0 < REQUEST_DEADLINE + 10
            # Closed by the server, each of them.
            for s in [slow, *idle[:20]]:
                s.settimeout(REQUEST_DEADLINE * 3)
                try:
                    while s.recv(4096):
                        pass
                except ConnectionResetError:
                    pass
            assert follower.is_alive(), "the live stream was cut"
            assert srv.post(f"/api/v1/runs/{run_id}/interrupt").status_code == 202
            follower.join(30)
            assert not follower.is_alive() and json.loads(stream[-1][1])["status"] == "interrupted"
        finally:
            stop.set()
            for s in [slow, *idle]:
                s.close()


def test_runs_of_another_host_on_a_shared_postgresql_store(home: Path, flows: Path) -> None:
    """With PostgreSQL the store's lock, not this host's lock file, says whether a runner is
    alive: a run another host is still finishing is not resumed from here, and a running
    run of another host with an old heartbeat but a live lock is shown running."""
    import time
    import uuid

    psycopg = pytest.importorskip("psycopg")
    from flowsh.state import RunRecord
    from flowsh.store import open_backend

    server = "postgresql:///test"
    try:
        psycopg.connect(server, connect_timeout=3).close()
    except psycopg.Error:
        pytest.skip(f"no PostgreSQL at {server}")
    schema = f"flowsh_web_{uuid.uuid4().hex[:12]}"
    url = f"{server}?options=-csearch_path%3D{schema}"
    backend = open_backend(url)
    try:
        with serve(home, "--workflows", str(flows), "--state", url) as srv:
            run_id = srv.post("/api/v1/runs", {"workflow": "nightly"}).json()["run_id"]
            wait_status(srv, run_id, ("failed",))
            wait_for(lambda: not backend.runner_alive(  # type: ignore[attr-defined]
                backend.load_run(run_id)), 30, "its runner's end")
            run_dir = home / "runs" / run_id
            spawned = len(list(run_dir.glob("web-*.out")))
            # Its runner on another host, still writing its end: it holds the run's lock.
            held = backend.hold_runner(run_id)  # type: ignore[attr-defined]
            assert held is not None
            try:
                r = srv.post(f"/api/v1/runs/{run_id}/resume")
                assert r.status_code == 409 and "still finishing" in r.json()["error"], r.text
                assert len(list(run_dir.glob("web-*.out"))) == spawned  # nothing spawned

                now = time.time()
                backend.create_run(RunRecord(
                    run_id="elsewhere-1", workflow="nightly", file=None, definition_hash="h",
                    params={}, status="running", pid=4242, host="elsewhere",
                    started_at=now - 3600, heartbeat=now - 3600))
                other = backend.hold_runner("elsewhere-1")  # type: ignore[attr-defined]
                assert srv.client.get("/api/v1/runs/elsewhere-1").json()["status"] == "running"
                r = srv.post("/api/v1/runs/elsewhere-1/interrupt")
                assert r.status_code == 422 and "runs on elsewhere" in r.json()["error"]
                other.release()
                # The server ends the released session on its own time (a loaded host:
                # pg_locks shows the lock until then).
                wait_for(lambda: srv.client.get("/api/v1/runs/elsewhere-1").json()["status"]
                         == "crashed", 30, "the other host's run to read crashed")
            finally:
                held.release()
            r = srv.post(f"/api/v1/runs/{run_id}/resume")
            assert r.status_code == 202, r.text
            wait_status(srv, run_id, ("failed",))
    finally:
        backend.close()
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
