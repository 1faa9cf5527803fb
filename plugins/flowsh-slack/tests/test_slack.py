"""The slack notifier against a local HTTP server standing in for Slack's webhook."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import flowsh_slack
import pytest

from flowsh.api import (
    Alert,
    Notify,
    WorkflowError,
    build_notifier,
    dispatch,
    get_plugin_manager,
    reset_plugins,
)


@pytest.fixture
def slack_server():
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"path": self.path, "json": json.loads(body)})
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/services/T0/B0/secret", received
    server.shutdown()
    server.server_close()


@pytest.fixture
def registered():
    reset_plugins()
    pm = get_plugin_manager()
    if pm.get_plugin("slack") is None:
        pm.register(flowsh_slack, name="slack")
    yield
    reset_plugins()


def test_alert_posts_blocks(registered, slack_server, monkeypatch):
    url, received = slack_server
    monkeypatch.setenv("SLACK_URL", url)
    notify = Notify.model_validate({
        "channels": {"team": {"type": "slack", "webhook_url_env": "SLACK_URL",
                              "channel": "#ops", "mention": "<!here>"}},
        "routes": {"critical": ["team"]},
    })
    alert = Alert(severity="critical", event="run_failed", workflow="etl", run_id="r1",
                  step="load", exit_code=3, log_tail="psql: connection refused",
                  message="step 'load' exited 3")
    [outcome] = dispatch(alert, notify)
    assert outcome.ok, outcome.error
    [req] = received
    assert req["path"] == "/services/T0/B0/secret"
    payload = req["json"]
    assert payload["channel"] == "#ops"
    assert payload["text"].startswith("<!here> ")
    assert "etl" in payload["blocks"][0]["text"]["text"]
    fields = {f["text"].split("\n")[0]: f["text"].split("\n")[1]
              for f in payload["blocks"][1]["fields"]}
    assert fields["*Exit code*"] == "3" and fields["*Step*"] == "load"
    assert "connection refused" in payload["blocks"][2]["text"]["text"]


def test_config_needs_exactly_one_url(registered):
    with pytest.raises(WorkflowError, match="'team' key 'webhook_url'"):
        build_notifier("team", {"type": "slack"})
    with pytest.raises(WorkflowError, match="unknown key"):
        build_notifier("team", {"type": "slack", "webhook_url": "https://x", "chanel": "#ops"})
