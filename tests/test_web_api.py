"""`flowsh serve`'s REST API, against a real server process on loopback and real runs."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import alive, run_cli, wait_dead
from tests.web_helpers import FLOW, Server, serve, sse_events, wait_for, wait_status


@pytest.fixture
def flows(tmp_path: Path) -> Path:
    d = tmp_path / "flows"
    d.mkdir()
    (d / "nightly.yaml").write_text(FLOW.format(flag=tmp_path / "flag"))
    (d / "slow.yaml").write_text(
        "name: slow\nschedule: '0 3 * * *'\nsteps:\n  - name: wait\n    run: echo started; sleep 30\n")
    (d / "broken.yaml").write_text("name: broken\nsteps:\n  - name: x\n    runn: echo\n")
    return d


@pytest.fixture
def srv(home: Path, flows: Path) -> Iterator[Server]:
    with serve(home, "--workflows", str(flows)) as server:
        yield server


def test_failed_night_from_the_api(srv: Server, home: Path, tmp_path: Path) -> None:
    # The workflows: from --workflows, with the file that does not load named.
    wfs = srv.client.get("/api/v1/workflows").json()
    names = {w["name"]: w for w in wfs["workflows"]}
    assert names["nightly"]["params"] == {"WHO": "world"} and names["nightly"]["startable"]
    assert any("broken.yaml" in f for f in wfs["errors"])
    slow = names["slow"]
    assert slow["schedule"] == ["0 3 * * *"] and 0 < slow["next_run"] - time.time() <= 86400
    assert time.localtime(slow["next_run"]).tm_hour == 3 and slow["last_status"] is None

    # Params are validated as `flowsh run` validates them, with its message.
    bad = srv.post("/api/v1/runs", {"workflow": "nightly", "params": {"WHOM": "x"}})
    assert bad.status_code == 422
    assert "unknown parameter 'WHOM'" in bad.json()["error"] and "did you mean 'WHO'" in bad.json()["error"]
    assert bad.json()["exit_code"] == 2
    assert srv.post("/api/v1/runs", {"workflow": "nope"}).status_code == 404

    started = srv.post("/api/v1/runs", {"workflow": "nightly", "params": {"WHO": "ana; rm -rf /"}})
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]
    run = wait_status(srv, run_id, ("failed",))
    steps = {s["name"]: s for s in run["steps"]}
    assert run["params"] == {"WHO": "ana; rm -rf /"}  # an argv item, never shell text
    # The runner's own output lives with its run (prune deletes it with the run).
    assert list((home / "runs" / run_id).glob("web-*.out"))
    assert not list((home / "web").glob("web-*"))
    assert steps["fetch"]["status"] == "succeeded" and steps["load"]["status"] == "failed"
    assert steps["load"]["exit_code"] == 3 and steps["load"]["attempt_spans"]
    assert steps["publish"]["status"] == "skipped"

    log = srv.client.get(f"/api/v1/runs/{run_id}/steps/load/log").json()
    assert log["lines"][-1].startswith("no flag file") and log["status"] == "failed"
    assert srv.client.get(f"/api/v1/runs/{run_id}/steps/fetch/log?lines=1").json()["lines"] == [
        "fetching for ana; rm -rf /"]
    events = sse_events(srv, f"/api/v1/runs/{run_id}/steps/load/log/stream",
                        lambda ev, _: ev == "end")
    text = "".join(json.loads(d)["text"] for ev, d in events if ev == "log")
    assert "loading\n" in text and "no flag file" in text
    assert json.loads(events[-1][1])["status"] == "failed"
    # A reconnecting EventSource sends the last id it saw: it gets only what follows.
    first = json.loads(events[0][1])
    with srv.client.stream("GET", f"/api/v1/runs/{run_id}/steps/load/log/stream",
                           headers={"Last-Event-ID": str(len("loading\n"))}) as resp:
        rest = "".join(resp.iter_text())
    assert "loading" not in rest and "no flag file" in rest and first["offset"] > 0

    # The CLI sees the same run.
    assert run_cli("status", run_id).stdout.count("failed") >= 2

    # Filters and pages.
    page = srv.client.get("/api/v1/runs", params={"status": "failed", "workflow": "nightly"}).json()
    assert [r["run_id"] for r in page["runs"]] == [run_id]
    assert srv.client.get("/api/v1/runs", params={"status": "succeeded"}).json()["runs"] == []

    # Resume, as `flowsh resume` does: the fixed step and what follows; no re-run of fetch.
    (tmp_path / "flag").write_text("")
    resumed = srv.post(f"/api/v1/runs/{run_id}/resume")
    assert resumed.status_code == 202, resumed.text
    run = wait_status(srv, run_id, ("succeeded",))
    steps = {s["name"]: s for s in run["steps"]}
    assert steps["fetch"]["attempts"] == 1 and steps["publish"]["status"] == "succeeded"
    again = srv.post(f"/api/v1/runs/{run_id}/resume")
    assert again.status_code == 422 and "nothing to resume" in again.json()["error"]

    # Retry one step with what follows it.
    before = steps["publish"]["started_at"]
    retried = srv.post(f"/api/v1/runs/{run_id}/retry", {"step": "load", "downstream": True})
    assert retried.status_code == 202, retried.text

    def retried_publish() -> bool:
        run = srv.client.get(f"/api/v1/runs/{run_id}").json()
        steps = {s["name"]: s for s in run["steps"]}
        return run["status"] == "succeeded" and steps["publish"]["started_at"] > before
    wait_for(retried_publish, 60, "the retry")
    # 409 while the retry's runner is finishing; then an unknown step is a 404.
    codes = wait_for(lambda: {srv.post(f"/api/v1/runs/{run_id}/retry", {"step": "nope"}
                                       ).status_code} - {409}, 30, "the retry's end")
    assert codes == {404}


def test_interrupt_and_the_server_going_down(home: Path, flows: Path) -> None:
    with serve(home, "--workflows", str(flows)) as srv:
        run_id = srv.post("/api/v1/runs", {"workflow": "slow"}).json()["run_id"]
        run = wait_status(srv, run_id, ("running",))
        runner = run["pid"]
        assert srv.post(f"/api/v1/runs/{run_id}/interrupt").status_code == 202
        run = wait_status(srv, run_id, ("interrupted",))
        assert run["exit_code"] == 130 and run["steps"][0]["status"] == "interrupted"
        assert srv.post(f"/api/v1/runs/{run_id}/interrupt").status_code == 422
        # A run started from the server is its own process: the server stopping leaves it be.
        second = srv.post("/api/v1/runs", {"workflow": "slow"}).json()["run_id"]
        runner = wait_status(srv, second, ("running",))["pid"]
        server_pid = srv.proc.pid
    wait_dead(server_pid)
    assert alive(runner)
    os.kill(runner, signal.SIGTERM)
    assert wait_dead(runner, 15)
    assert '"interrupted"' in run_cli("status", second, "--json").stdout


def test_guard(home: Path, flows: Path, tmp_path: Path) -> None:
    with serve(home, "--workflows", str(flows)) as srv:
        # CSRF: a POST without this server's token is refused before anything happens.
        r = srv.client.post("/api/v1/runs", json={"workflow": "slow"})
        assert r.status_code == 403 and "X-CSRF-Token" in r.json()["error"]
        r = srv.client.post("/workflows/slow/start", data={"csrf": "wrong"})
        assert r.status_code == 422 and "CSRF" in r.text
        # A page from another name for this address (DNS rebinding) is refused.
        r = srv.client.get("/api/v1/runs", headers={"Host": "evil.example:80"})
        assert r.status_code == 400
        assert srv.client.get("/api/v1/runs").headers["x-frame-options"] == "DENY"
        assert srv.client.get("/api/v1/runs", params={"limit": "x"}).status_code == 400
        assert srv.client.get("/api/v1/nothing").json()["exit_code"] == 4
        assert srv.client.get("/api/v1/openapi.json").json()["openapi"].startswith("3.")
        assert run_cli("history").stdout.count("slow") == 0  # nothing was started

    with serve(home, "--workflows", str(flows), "--read-only") as srv:
        r = srv.post("/api/v1/runs", {"workflow": "slow"})
        assert r.status_code == 403 and "read-only" in r.json()["error"]
        assert srv.client.get("/api/v1/session").json()["read_only"] is True
        assert "Start run" not in srv.client.get("/").text

    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token-value\n")
    with serve(home, "--token-file", str(token_file), token="s3cret-token-value") as srv:
        anon = httpx.Client(base_url=srv.url)
        assert anon.get("/api/v1/runs").status_code == 401
        assert anon.get("/api/v1/runs", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert anon.get("/metrics").status_code == 401
        # The printed link with ?token= logs a browser in with a cookie, then drops it.
        r = anon.get("/?token=s3cret-token-value")
        assert r.status_code == 303 and r.headers["location"] == "/"
        assert "httponly" in r.headers["set-cookie"].lower()
        assert anon.get("/").status_code == 200
        assert "s3cret" not in (home / next(p.name for p in home.glob("serve-*.out"))).read_text()


def test_refusals_at_the_command_line(tmp_path: Path) -> None:
    r = run_cli("serve", "--workflows", str(tmp_path / "none"))
    assert r.returncode == 2 and "not a directory" in r.stderr
    empty = tmp_path / "empty"
    empty.write_text("")
    r = run_cli("serve", "--host", "0.0.0.0", "--token-file", str(empty))
    assert r.returncode == 2 and "empty" in r.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        r = run_cli("serve", "--port", str(taken.getsockname()[1]))
    assert r.returncode == 1 and r.stderr.endswith("Address already in use\n")
    assert r.stderr.count("\n") == 1
    # Without the `ui` extra: one line naming the pip command (the import is made to fail
    # the way a missing package fails).
    code = ("import sys; sys.modules['uvicorn'] = None; from flowsh.__main__ import main; "
            "sys.argv = ['flowsh', 'serve']; main()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        "flowsh: error: flowsh serve needs the web UI's packages (uvicorn is missing): "
        "pip install 'flowsh[ui]'"]


def test_paths_never_leave_the_run_directories(srv: Server, home: Path, tmp_path: Path) -> None:
    (tmp_path / "flag").write_text("")
    run_id = srv.post("/api/v1/runs", {"workflow": "nightly"}).json()["run_id"]
    wait_status(srv, run_id, ("succeeded",))
    secret = tmp_path / "outside.txt"
    secret.write_text("not yours\n")
    db = sqlite3.connect(home / "flowsh.db")
    with db:  # a record edited by hand points a log outside, directly and through a link
        db.execute("UPDATE steps SET log_path = ? WHERE run_id = ? AND name = 'fetch'",
                   (str(secret), run_id))
        link = home / "runs" / run_id / "sneaky.log"
        link.symlink_to(secret)
        db.execute("UPDATE steps SET log_path = ? WHERE run_id = ? AND name = 'load'",
                   (str(link), run_id))
        db.execute("UPDATE steps SET log_path = ? WHERE run_id = ? AND name = 'publish'",
                   (str(home / "runs" / run_id / ".." / ".." / ".." / "outside.txt"), run_id))
    db.close()
    for step in ("fetch", "load", "publish"):
        got = srv.client.get(f"/api/v1/runs/{run_id}/steps/{step}/log").json()
        assert got["lines"] == [], step
        events = sse_events(srv, f"/api/v1/runs/{run_id}/steps/{step}/log/stream",
                            lambda ev, _: ev == "end")
        assert "not yours" not in json.dumps(events)
    assert srv.client.get(f"/api/v1/runs/{run_id}/steps/..%2F..%2Fetc/log").status_code == 404


def test_secrets_masked_and_metrics(home: Path, tmp_path: Path) -> None:
    d = tmp_path / "flows"
    d.mkdir()
    (d / "s.yaml").write_text(
        "name: s\nparams:\n  API_TOKEN: hunter2-very-secret\nsteps:\n"
        "  - name: leak\n    run: echo \"token is $API_TOKEN\"\n")
    with serve(home, "--workflows", str(d)) as srv:
        run_id = srv.post("/api/v1/runs", {"workflow": "s"}).json()["run_id"]
        run = wait_status(srv, run_id, ("succeeded",))
        assert "hunter2" not in json.dumps(run)
        log = srv.client.get(f"/api/v1/runs/{run_id}/steps/leak/log").json()
        assert log["lines"] == ["token is ***"]
        events = sse_events(srv, f"/api/v1/runs/{run_id}/steps/leak/log/stream",
                            lambda ev, _: ev == "end")
        assert "hunter2" not in json.dumps(events) and "token is ***" in json.dumps(events)
        assert "hunter2" not in srv.client.get(f"/runs/{run_id}").text
        from prometheus_client.parser import text_string_to_metric_families

        text = srv.client.get("/metrics").text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        status = families["flowsh_run_last_status"].samples[0]
        assert status.labels == {"workflow": "s"} and status.value == 0
        # The run's events, as SSE: its state, then the stream stays for a resume.
        got = sse_events(srv, f"/api/v1/runs/{run_id}/events", lambda ev, _: ev == "run")
        assert json.loads(got[0][1])["steps"]["leak"]["status"] == "succeeded"


@pytest.mark.parametrize("scheme", ["sqlite", "json"])
def test_pages_of_runs(home: Path, scheme: str) -> None:
    """Pages of /api/v1/runs are `flowsh history`'s order, cut in pages, on both built-in
    backends (SQLite pages in SQL; others through list_runs)."""
    from flowsh.state import RunRecord
    from flowsh.store import open_backend

    url = f"sqlite:///{home}/pages.db" if scheme == "sqlite" else f"json:///{home}/pages"
    backend = open_backend(url)
    for i in range(23):
        backend.create_run(RunRecord(
            run_id=f"r{i:03d}", workflow=f"wf{i % 3}", file=None, definition_hash="h",
            params={}, status="failed" if i % 4 == 0 else "succeeded", pid=None,
            host="elsewhere", started_at=1_700_000_000.0 + i, ended_at=1_700_000_001.0 + i))
    backend.close()
    with serve(home, "--state", url) as srv:
        seen, offset = [], 0
        while offset is not None:
            page = srv.client.get("/api/v1/runs", params={"limit": 5, "offset": offset}).json()
            assert len(page["runs"]) <= 5
            seen += [r["run_id"] for r in page["runs"]]
            offset = page["next_offset"]
        assert seen == [f"r{i:03d}" for i in reversed(range(23))]
        query = {"workflow": "wf0", "status": "failed", "limit": 1}
        page = srv.client.get("/api/v1/runs", params=query).json()
        assert [r["run_id"] for r in page["runs"]] == ["r012"] and page["next_offset"] == 1
        page = srv.client.get("/api/v1/runs", params={**query, "offset": 1}).json()
        assert [r["run_id"] for r in page["runs"]] == ["r000"] and page["next_offset"] is None
        names = [w["name"] for w in srv.client.get("/api/v1/workflows").json()["workflows"]]
        assert names == ["wf0", "wf1", "wf2"]
        assert "r022" in srv.client.get("/runs", params={"workflow": "wf1"}).text


def test_a_seed_file_among_workflows_is_listed_not_sourced(home: Path, tmp_path: Path) -> None:
    """Listing --workflows, the dashboard and a run's page parse a seed bash file, never
    source it (only `flowsh run`, spawned by a start, evaluates it)."""
    flows = tmp_path / "seedflows"
    flows.mkdir()
    proof = tmp_path / "SOURCED"
    (flows / "job.sh").write_text(
        f'#!/bin/bash\nX=$(touch {proof}; echo x)\na() {{ echo "step a"; }}\n'
        "declare -A workflow=( [start]=a [a]=end )\n")
    with serve(home, "--workflows", str(flows)) as srv:
        names = [w["name"] for w in srv.client.get("/api/v1/workflows").json()["workflows"]]
        assert len(names) == 1 and srv.client.get("/").status_code == 200, names
        assert not proof.exists(), "listing the workflows sourced the file"
        run_id = srv.post("/api/v1/runs", {"workflow": names[0]}).json()["run_id"]
        wait_status(srv, run_id, ("succeeded",))
        assert proof.exists()  # the run itself sources it, as `flowsh run` does
        proof.unlink()
        for path in (f"/runs/{run_id}", f"/api/v1/runs/{run_id}",
                     f"/api/v1/runs/{run_id}/steps/a/log", "/dashboard/cards"):
            assert srv.client.get(path).status_code == 200, path
        assert not proof.exists(), "showing the run sourced its file"


def test_a_call_step_links_its_child_run_and_back(home: Path, tmp_path: Path) -> None:
    """A `call:` step's child run (CALL-*): the API gives the step's `child_run` and the
    child's `parent_run`/`parent_step`, and each run's page links to the other."""
    (tmp_path / "child.yaml").write_text("name: child\nsteps:\n  - name: c\n    run: echo c\n")
    parent = tmp_path / "parent.yaml"
    parent.write_text("name: parent\nsteps:\n  - name: sub\n    call: child.yaml\n")
    done = run_cli("run", "--json", str(parent))
    assert done.returncode == 0, done.stderr
    parent_id = json.loads(done.stdout.splitlines()[0])["run_id"]
    with serve(home) as srv:
        run = srv.client.get(f"/api/v1/runs/{parent_id}").json()
        child_id = next(s for s in run["steps"] if s["name"] == "sub")["child_run"]
        assert child_id and child_id != parent_id
        child = srv.client.get(f"/api/v1/runs/{child_id}").json()
        assert (child["workflow"], child["parent_run"], child["parent_step"]) == \
            ("child", parent_id, "sub")
        assert f'class="child-run" href="/runs/{child_id}"' in \
            srv.client.get(f"/runs/{parent_id}").text
        assert f'class="parent-run" href="/runs/{parent_id}"' in \
            srv.client.get(f"/runs/{child_id}").text
