"""End to end: real `flowsh run` processes alerting through real channels."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli
from tests.notify_servers import (  # noqa: F401 (fixtures)
    http_server_fixture,
    silent_server_fixture,
)

FLOW = """\
name: etl
env: {{API_TOKEN: tok-abcdef-123}}
kill_grace: 0.2s
steps:
  - name: extract
    run: echo "rows=3 using $API_TOKEN"
  - name: load
    run: 'echo loading; echo "psql: could not connect" >&2; exit 3'
notify:
  channels:
    sms: {{type: command, run: 'cat > alert.json'}}
{channels}
  routes: {{critical: [{critical}], info: [log]}}
  events: {{run_failed: critical, run_succeeded: info}}
"""


def _flow(tmp_path: Path, channels: str = "", critical: str = "sms, log") -> Path:
    p = tmp_path / "etl.yaml"
    p.write_text(FLOW.format(channels=channels, critical=critical))
    return p


def test_failing_workflow_alerts_command_and_log(tmp_path, home):
    res = run_cli("run", str(_flow(tmp_path)), "--quiet")
    assert res.returncode == 1, res.stderr
    alert = json.loads((tmp_path / "alert.json").read_text())
    assert alert["event"] == "run_failed" and alert["severity"] == "critical"
    assert alert["step"] == "load" and alert["exit_code"] == 3
    assert "psql: could not connect" in alert["log_tail"]
    assert alert["subject"].startswith("[CRITICAL] etl: run failed (step load, exit 3)")
    assert "tok-abcdef" not in (tmp_path / "alert.json").read_text()
    log = (home / "alerts.log").read_text()
    assert "CRITICAL etl" in log and alert["run_id"] in log


def test_hanging_and_failing_notifiers_leave_the_exit_code(tmp_path, silent_server):
    host, port = silent_server
    channels = (f"    mail: {{type: email, to: ops@example.com, host: {host}, port: {port},"
                " timeout: 0.3s}\n"
                "    broken: {type: command, run: 'exit 9'}")
    flow = _flow(tmp_path, channels, critical="mail, broken, sms")
    res = run_cli("run", str(flow), "--quiet")
    assert res.returncode == 1
    mail_err = [ln for ln in res.stderr.splitlines() if "channel 'mail' failed" in ln]
    assert len(mail_err) == 1 and "timed out" in mail_err[0]
    assert "notify channel 'broken' failed to send run_failed alert: command exited 9" \
        in res.stderr
    assert (tmp_path / "alert.json").exists()  # the good channel still got it
    assert "Traceback" not in res.stderr
    # A succeeding run with a broken channel still exits 0.
    ok = tmp_path / "ok.yaml"
    ok.write_text("steps: [{name: a, run: 'true'}]\nnotify:\n  channels:\n"
                  "    broken: {type: command, run: 'exit 9'}\n"
                  "  events: {run_succeeded: info}\n")
    res = run_cli("run", str(ok), "--quiet")
    assert res.returncode == 0 and "command exited 9" in res.stderr


def test_user_config_channel_usable_by_name(tmp_path, home):
    cfg = home / "config" / "flowsh"
    cfg.mkdir(parents=True)
    (cfg / "config.yaml").write_text(
        "notify:\n  channels:\n    team: {type: command, run: 'cat > team.json'}\n")
    flow = tmp_path / "f.yaml"
    flow.write_text("steps: [{name: a, run: 'exit 2'}]\n"
                    "notify:\n  routes: {critical: [team]}\n")
    res = run_cli("run", str(flow), "--quiet")
    assert res.returncode == 1, res.stderr
    assert json.loads((tmp_path / "team.json").read_text())["exit_code"] == 2


def test_notify_test_command(tmp_path, http_server):
    flow = _flow(tmp_path, f"    hook: {{type: webhook, url: '{http_server.url}/x'}}")
    res = run_cli("notify", "test", "hook", str(flow))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "sent a test alert to hook"
    assert http_server.requests[0].json()["event"] == "test"
    res = run_cli("notify", "test", "pager", str(flow))
    assert res.returncode == 4 and "unknown notify channel 'pager'" in res.stderr
    http_server.script[:] = [404]
    res = run_cli("notify", "test", "hook", str(flow))
    assert res.returncode == 1
    assert res.stderr.startswith("flowsh: error: notify channel 'hook': ")


def test_notify_test_bad_channel_config_is_exit_2(tmp_path):
    flow = _flow(tmp_path, "    hook: {type: webhook, url: 'ftp://x'}")
    res = run_cli("notify", "test", "hook", str(flow))
    assert res.returncode == 2
    assert "etl.yaml:12:27: notify channel 'hook' key 'url'" in res.stderr


def test_notify_send_for_exported_scripts(tmp_path):
    flow = _flow(tmp_path)
    log = tmp_path / "load.log"
    log.write_text("boom\n")
    res = run_cli("notify", "send", str(flow), "--event", "run_failed", "--step", "load",
                  "--exit-code", "3", "--run-id", "bash-1", "--message", "load failed",
                  "--log", str(log))
    assert res.returncode == 0, res.stderr
    alert = json.loads((tmp_path / "alert.json").read_text())
    assert (alert["run_id"], alert["step"], alert["log_tail"]) == ("bash-1", "load", "boom")
    res = run_cli("notify", "send", str(flow), "--event", "nope")
    assert res.returncode == 2 and "unknown event 'nope'" in res.stderr
