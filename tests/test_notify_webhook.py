"""The webhook notifier against a real http.server on loopback."""

from __future__ import annotations

import pytest

from flowsh.errors import WorkflowError
from flowsh.model import Notify
from flowsh.notify import Alert, dispatch
from tests.notify_servers import (  # noqa: F401 (fixtures)
    http_server_fixture,
)


def _alert() -> Alert:
    return Alert(severity="warning", event="step_retry", workflow="etl", run_id="r1",
                 step="extract", exit_code=7, message="attempt 1 failed")


def _notify(url: str, **extra: object) -> Notify:
    return Notify.model_validate({
        "channels": {"hook": {"type": "webhook", "url": url, "retry_delay": "10ms", **extra}},
        "routes": {"warning": ["hook"]},
    })


def test_posts_the_alert_as_json(http_server, monkeypatch):
    monkeypatch.setenv("HOOK_TOKEN", "tok-123456")
    notify = _notify(http_server.url + "/alerts", headers={"X-Team": "data"},
                     token_env="HOOK_TOKEN")
    [out] = dispatch(_alert(), notify)
    assert out.ok, out.error
    [req] = http_server.requests
    assert req.path == "/alerts"
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["X-Team"] == "data"
    assert req.headers["Authorization"] == "Bearer tok-123456"
    data = req.json()
    assert (data["workflow"], data["step"], data["exit_code"]) == ("etl", "extract", 7)
    assert data["subject"].startswith("[WARNING] etl: step retry")


def test_retries_server_errors(http_server):
    http_server.script[:] = [500, 503]
    [out] = dispatch(_alert(), _notify(http_server.url, retries=2))
    assert out.ok, out.error
    assert len(http_server.requests) == 3


def test_gives_up_after_retries(http_server, capsys):
    http_server.script[:] = [500, 500, 500]
    [out] = dispatch(_alert(), _notify(http_server.url + "/secret-path", retries=1))
    assert not out.ok and "500" in out.error
    assert len(http_server.requests) == 2
    assert "secret-path" not in capsys.readouterr().err  # URLs can hold tokens


def test_client_errors_are_not_retried(http_server):
    http_server.script[:] = [404]
    [out] = dispatch(_alert(), _notify(http_server.url, retries=3))
    assert not out.ok and "404" in out.error
    assert len(http_server.requests) == 1


def test_hanging_server_times_out(http_server):
    http_server.script[:] = ["hang"]
    [out] = dispatch(_alert(), _notify(http_server.url, retries=0, timeout="0.3s"))
    assert not out.ok and "timed out" in out.error


def test_connection_refused_is_reported():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    [out] = dispatch(_alert(), _notify(f"http://127.0.0.1:{port}/", retries=0))
    assert not out.ok and "refused" in out.error.lower()


@pytest.mark.parametrize(("config", "key"), [
    ({}, "url"),
    ({"url": "ftp://example.com"}, "url"),
    ({"url": "http://x", "retries": -1}, "retries"),
    ({"url": "http://x", "headers": ["a"]}, "headers"),
    ({"url": "http://x", "urll": "y"}, "urll"),
])
def test_bad_config(config, key):
    from flowsh.plugins import registry

    with pytest.raises(WorkflowError, match=f"notify channel 'hook' key '{key}'"):
        registry("notifiers")["webhook"]("hook", config)
