"""Red-team reproducers for `flowsh serve` (issue 17). Each FAILS on c5b1318.

Real server process, real HTTP on loopback (tests/web_helpers.py).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import run_cli
from tests.web_helpers import Server, serve, wait_for

SECRET_FLOW = """\
name: sec
params:
  DB_PASSWORD: hunter2default
  WHO: world
steps:
  - name: show
    run: echo "who=$WHO"; sleep 5
"""


@pytest.fixture
def flows(tmp_path: Path) -> Path:
    d = tmp_path / "flows"
    d.mkdir()
    (d / "sec.yaml").write_text(SECRET_FLOW)
    return d


@pytest.fixture
def srv(home: Path, flows: Path) -> Iterator[Server]:
    with serve(home, "--workflows", str(flows)) as server:
        yield server


def test_secret_param_default_not_served(srv: Server) -> None:
    """PARAM-5/SECRET-1: a secret param's default is shown in clear by
    GET /api/v1/workflows (data.workflow_summary "params") and as the dashboard's
    input placeholder."""
    api = srv.client.get("/api/v1/workflows")
    assert api.status_code == 200
    assert "hunter2default" not in api.text
    page = srv.client.get("/")
    assert page.status_code == 200
    assert "hunter2default" not in page.text


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
def test_secret_param_not_in_runner_argv(srv: Server) -> None:
    """A secret param given through the API lands in the spawned runner's argv
    (actions.start: `run --json FILE KEY=VALUE`), readable by every local user in
    /proc/PID/cmdline (`ps`) for as long as the run lasts."""
    r = srv.post("/api/v1/runs", {"workflow": "sec",
                                  "params": {"DB_PASSWORD": "S3cretFromTheBrowser"}})
    assert r.status_code == 202, r.text
    pid = r.json()["pid"]
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    assert b"S3cretFromTheBrowser" not in cmdline, cmdline


def test_param_key_with_equals_sign_refused(srv: Server) -> None:
    """A param key is spliced into `KEY=VALUE`: the key `WHO=x` is taken as WHO with the
    value `x=y`, so a key the API was given is not the one the run gets."""
    r = srv.post("/api/v1/runs", {"workflow": "sec", "params": {"WHO=x": "y"}})
    assert r.status_code in (400, 422), r.text


def test_resume_of_workflow_outside_workflows_dirs_refused(
        srv: Server, home: Path, tmp_path: Path) -> None:
    """docs/ui.md: --workflows are the files the UI may start runs of; workflows only in
    history are 'shown, not startable'. Yet a failed run of a file outside every
    --workflows directory is re-executed by POST .../resume (actions.resume spawns
    `flowsh resume` on any recorded file, as it reads now)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proof = elsewhere / "proof"
    ok = elsewhere / "ok"
    flow = elsewhere / "other.yaml"
    flow.write_text(f"name: other\nsteps:\n  - name: a\n"
                    f"    run: test -f {ok} || exit 1; echo ran > {proof}\n")
    done = run_cli("run", str(flow))
    assert done.returncode == 1, done.stderr
    listed = srv.client.get("/api/v1/workflows").json()["workflows"]
    assert [w["startable"] for w in listed if w["name"] == "other"] == [False]
    run_id = srv.client.get("/api/v1/runs?workflow=other").json()["runs"][0]["run_id"]
    ok.touch()
    r = srv.post(f"/api/v1/runs/{run_id}/resume")
    if r.status_code == 202:
        wait_for(lambda: srv.client.get(f"/api/v1/runs/{run_id}").json()["status"]
                 != "running", 30, "the resumed run to end")
    assert r.status_code in (403, 404, 422), r.text
    assert not proof.exists()


def test_ipv6_loopback_host_without_port_accepted(srv: Server) -> None:
    """Guard._refuse cuts the port with rsplit(':', 1): `Host: [::1]` (a client on the
    default port, or any client naming the IPv6 loopback without a port) becomes `[:`
    and is refused 400 as a foreign host."""
    r = srv.client.get("/api/v1/session", headers={"Host": "[::1]"})
    assert r.status_code == 200, r.text


def test_token_link_does_not_redirect_off_site(home: Path, flows: Path) -> None:
    """The `?token=` login redirects to the request's path as is: `//evil.example/` is a
    protocol-relative Location, i.e. an open redirect to another site."""
    with serve(home, "--workflows", str(flows), token="t0ken-rt17-16chars",
               env={"FLOWSH_UI_TOKEN": "t0ken-rt17-16chars"}) as srv:
        port = int(srv.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET //evil.example/?token=t0ken-rt17-16chars HTTP/1.1\r\n"
                         b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")
            raw = b""
            while chunk := sock.recv(65536):
                raw += chunk
        head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        assert " 303 " in head.splitlines()[0], head
        location = [ln.split(":", 1)[1].strip() for ln in head.splitlines()
                    if ln.lower().startswith("location:")]
        assert location and not location[0].startswith("//"), head


def test_metrics_on_a_broken_store_is_not_an_html_page(home: Path, flows: Path) -> None:
    """/metrics is for Prometheus: with the store unreadable it answers an HTML error
    page (app._flowsh_error only treats /api/ paths as API), unlike every other failure
    of /metrics (_http_error sends JSON for it)."""
    with serve(home, "--workflows", str(flows)) as srv:
        (home / "flowsh.db").write_bytes(os.urandom(200))
        r = srv.client.get("/metrics")
        assert r.status_code == 503
        assert not r.headers["content-type"].startswith("text/html"), r.text[:200]



OUT_FLOW = """\
name: out
steps:
  - name: mk
    run: echo "API_TOKEN=tok-out-SEKRIT" >> "$FLOWSH_OUTPUT"
  - name: use
    needs: [mk]
    run: echo "got $API_TOKEN"; exit 1
"""


def test_log_path_cannot_name_the_secret_outputs_file(home: Path, tmp_path: Path) -> None:
    """data.log_path promises 'only if it lies inside the run's own directory', but that
    directory holds the 0600 `STEP.secret-outputs.json` (SECRET-2) and the check accepts
    any file under $FLOWSH_HOME/runs/ (another run's too). A record edited by hand or by
    another program sharing the store (the threat the docstring names) makes the log
    endpoint serve a secret output in clear: Masker.for_workflow does not know outputs."""
    import sqlite3

    flows = tmp_path / "outflows"
    flows.mkdir()
    (flows / "out.yaml").write_text(OUT_FLOW)
    with serve(home, "--workflows", str(flows)) as srv:
        run_id = srv.post("/api/v1/runs", {"workflow": "out"}).json()["run_id"]
        wait_for(lambda: srv.client.get(f"/api/v1/runs/{run_id}").json()["status"]
                 == "failed", 60, "the run to fail")
        secret_file = home / "runs" / run_id / "mk.secret-outputs.json"
        assert secret_file.exists()
        db = sqlite3.connect(home / "flowsh.db")
        with db:
            db.execute("UPDATE steps SET log_path = ? WHERE run_id = ? AND name = 'use'",
                       (str(secret_file), run_id))
        db.close()
        got = srv.client.get(f"/api/v1/runs/{run_id}/steps/use/log")
        assert "tok-out-SEKRIT" not in got.text, got.text


def test_long_param_value_is_a_one_line_refusal(srv: Server, home: Path) -> None:
    """A param value over the kernel's 128 KiB per-argument limit (MAX_ARG_STRLEN) makes
    actions._spawn's Popen raise OSError E2BIG: uncaught, the client gets a plain-text
    `Internal Server Error` 500 (not the API's JSON error), the server log a traceback,
    and $FLOWSH_HOME/web keeps an empty web-*.out/.err pair per request."""
    r = srv.post("/api/v1/runs", {"workflow": "sec", "params": {"WHO": "A" * 200_000}})
    assert r.status_code < 500, r.text[:200]
    assert r.headers["content-type"].startswith("application/json"), r.text[:200]
    assert list((home / "web").glob("web-*")) == []


def test_token_cookie_survives_another_apps_cookie(home: Path, flows: Path) -> None:
    """Cookies are per host, not per port: another app on the same host (Jupyter,
    Grafana, ...) can set `a=b c` or a JSON value. Guard reads the Cookie header with
    http.cookies.SimpleCookie, which gives up at the first such cookie, so the browser's
    flowsh_token is never seen: 401 for ever after the `?token=` login."""
    with serve(home, "--workflows", str(flows), token="t0ken-rt17-16chars",
               env={"FLOWSH_UI_TOKEN": "t0ken-rt17-16chars"}) as srv:
        base = srv.url
        # fix17b: the cookie holds a session value the `?token=` login sets, not the token.
        login = httpx.get(base + "/?token=t0ken-rt17-16chars")
        assert login.status_code == 303, login.text
        ((name, value),) = login.cookies.items()
        for header in (f'other="x"; {name}={value}',
                       f"prefs=dark mode; {name}={value}",
                       f'state={{"a":1}}; {name}={value}'):
            r = httpx.get(base + "/api/v1/session", headers={"Cookie": header})
            assert r.status_code == 200, (header, r.text)


def test_log_stream_offset_past_any_file_is_refused(srv: Server) -> None:
    """`?offset=` has no upper bound (query_int(..., None)) and `Last-Event-ID` is any run
    of digits: 10**23 reaches sse._read_from's fh.seek, which raises ValueError (only
    OSError is caught). The 200 stream dies with no `end` event and a traceback in the
    server's log, instead of a 400 before the stream."""
    r = srv.post("/api/v1/runs", {"workflow": "sec"})
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]
    path = f"/api/v1/runs/{run_id}/steps/show/log/stream"
    for kw in ({"params": {"offset": "9" * 23}}, {"headers": {"Last-Event-ID": "9" * 23}}):
        body = ""
        with srv.client.stream("GET", path, timeout=30, **kw) as resp:
            try:
                for text in resp.iter_text():
                    body += text
            except httpx.RemoteProtocolError:
                body += "<connection dropped mid-stream>"
        assert resp.status_code == 400 or "event: end" in body, (kw, resp.status_code, body)


def test_a_start_answered_409_does_not_run_later(home: Path, tmp_path: Path) -> None:
    """With `overlap: wait`, a start that does not get its run id within START_WAIT
    (15 s) answers 409 'the run did not start' — but actions.start leaves the spawned
    `flowsh run` waiting for the lock, and it runs once the lock frees. The client was
    told no; a client that retries on 409 queues one more run per retry. (Its
    web-*.out/.err also stay in $FLOWSH_HOME/web for good.)"""
    flows = tmp_path / "waitflows"
    flows.mkdir()
    (flows / "waiter.yaml").write_text(
        "name: waiter\noverlap: wait\nsteps:\n  - name: s\n    run: sleep 17\n")
    with serve(home, "--workflows", str(flows)) as srv:
        first = srv.post("/api/v1/runs", {"workflow": "waiter"})
        assert first.status_code == 202, first.text
        second = srv.post("/api/v1/runs", {"workflow": "waiter"})
        assert second.status_code == 409, second.text
        first_id = first.json()["run_id"]
        wait_for(lambda: srv.client.get(f"/api/v1/runs/{first_id}").json()["status"]
                 != "running", 60, "the first run to end")
        import time
        time.sleep(3)
        runs = srv.client.get("/api/v1/runs?workflow=waiter").json()["runs"]
        assert [r["run_id"] for r in runs] == [first_id], runs
