"""Pings against a local HTTP server standing in for healthchecks.io."""

from __future__ import annotations

import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import flowsh_healthchecks
import pytest

from flowsh.api import (
    Masker,
    RunContext,
    RunRecord,
    StepRecord,
    Workflow,
    WorkflowError,
    build_notifier,
    get_plugin_manager,
    ping_url,
    reset_plugins,
)


def _path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


@pytest.fixture
def hc_server():
    pings: list[tuple[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            pings.append((self.path, body.decode()))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/ping/abc", pings
    server.shutdown()
    server.server_close()


@pytest.fixture
def registered():
    reset_plugins()
    pm = get_plugin_manager()
    if pm.get_plugin("healthchecks") is None:
        pm.register(flowsh_healthchecks, name="healthchecks")
    yield
    reset_plugins()


def _emit(event: str, run: RunRecord, wf: Workflow, tmp_path: object) -> None:
    ctx = RunContext(run=run, workflow=wf, masker=Masker(), run_dir=tmp_path)  # type: ignore[arg-type]
    getattr(get_plugin_manager().hook, event)(ctx=ctx, run=run, workflow=wf)


def _workflow(url: str, **extra: object) -> Workflow:
    return Workflow.model_validate({
        "name": "etl",
        "steps": [{"name": "load", "run": "false"}],
        "notify": {"channels": {"hc": {"type": "healthchecks", "url": url, **extra}}},
    })


def test_start_and_exit_code_pings(registered, hc_server, tmp_path):
    url, pings = hc_server
    wf = _workflow(url)
    log = tmp_path / "load.log"
    log.write_text("loading\nERROR: disk full\n")
    run = RunRecord(run_id="r1", workflow="etl", file=None, definition_hash="h", params={},
                    started_at=time.time())
    _emit("flowsh_run_started", run, wf, tmp_path)
    run.steps["load"] = StepRecord(name="load", status="failed", exit_code=3,
                                   log_path=str(log))
    run.status, run.exit_code = "failed", 1
    _emit("flowsh_run_finished", run, wf, tmp_path)
    assert [p for p, _ in pings] == [_path(ping_url(url, s, "r1")) for s in ("start", "1")]
    assert pings[0][0].startswith("/ping/abc/start?rid=")
    (rid1,), (rid2,) = (parse_qs(urlsplit(p).query)["rid"] for p, _ in pings)
    assert rid1 == rid2 and str(uuid.UUID(rid1)) == rid1  # healthchecks wants a UUID
    assert "disk full" in pings[1][1]


def test_success_without_exit_codes_pings_bare_url(registered, hc_server, tmp_path):
    url, pings = hc_server
    wf = _workflow(url, exit_codes=False)
    run = RunRecord(run_id="r2", workflow="etl", file=None, definition_hash="h", params={},
                    status="succeeded", exit_code=0)
    _emit("flowsh_run_finished", run, wf, tmp_path)
    assert [p for p, _ in pings] == [_path(ping_url(url, "", "r2"))]
    assert pings[0][0].startswith("/ping/abc?rid=")


def test_bad_config(registered):
    with pytest.raises(WorkflowError, match="'hc' key 'url'"):
        build_notifier("hc", {"type": "healthchecks", "url": "ftp://x"})
