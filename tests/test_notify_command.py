"""The command notifier runs a real script (the seed's send_sms)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flowsh.errors import WorkflowError
from flowsh.model import Notify
from flowsh.notify import Alert, dispatch

SEND_SMS = """#!/bin/bash
# A stand-in for the seed's send_sms: records what it was given.
out="$1"
{
  echo "severity=$FLOWSH_ALERT_SEVERITY"
  echo "workflow=$FLOWSH_ALERT_WORKFLOW"
  echo "step=$FLOWSH_ALERT_STEP"
  echo "exit=$FLOWSH_ALERT_EXIT_CODE"
  echo "subject=$FLOWSH_ALERT_SUBJECT"
  echo "pwd=$PWD"
  echo "extra=$EXTRA"
} > "$out.env"
cat > "$out.json"
"""


@pytest.fixture
def script(tmp_path: Path) -> Path:
    p = tmp_path / "send_sms.sh"
    p.write_text(SEND_SMS)
    p.chmod(0o755)
    return p


def _alert(tmp_path: Path, **kw: object) -> Alert:
    base: dict[str, object] = dict(severity="critical", event="run_failed", workflow="etl",
                                   run_id="r1", step="load", exit_code=3,
                                   message="load failed; $(touch pwned)",
                                   file=str(tmp_path / "etl.yaml"))
    base.update(kw)
    return Alert(**base)  # type: ignore[arg-type]


def test_script_receives_env_and_json(tmp_path, script):
    notify = Notify.model_validate({
        "channels": {"sms": {"type": "command", "run": "./send_sms.sh out",
                             "env": {"EXTRA": "yes"}}},
        "routes": {"critical": ["sms"]},
    })
    [out] = dispatch(_alert(tmp_path), notify)
    assert out.ok, out.error
    env = dict(line.split("=", 1) for line in (tmp_path / "out.env").read_text().splitlines())
    assert env["severity"] == "critical" and env["workflow"] == "etl"
    assert env["step"] == "load" and env["exit"] == "3" and env["extra"] == "yes"
    assert env["pwd"] == str(tmp_path)  # runs in the workflow's directory
    assert env["subject"].startswith("[CRITICAL] etl: run failed")
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["message"] == "load failed; $(touch pwned)"
    assert not (tmp_path / "pwned").exists()  # alert text is data, never command text


def test_failing_command_is_reported(tmp_path, capsys):
    notify = Notify.model_validate({
        "channels": {"sms": {"type": "command", "run": "echo 'gateway down' >&2; exit 4"}},
    })
    [out] = dispatch(_alert(tmp_path), notify)
    assert not out.ok and out.error == "command exited 4: gateway down"
    assert "notify channel 'sms' failed" in capsys.readouterr().err


def test_hanging_command_is_killed(tmp_path):
    notify = Notify.model_validate({
        "channels": {"sms": {"type": "command", "timeout": "0.3s",
                             "run": "sleep 30 & echo $! > child.pid; wait"}},
    })
    [out] = dispatch(_alert(tmp_path), notify)
    assert not out.ok and "timed out" in out.error
    import os

    pid = int((tmp_path / "child.pid").read_text())
    # The whole process group was killed, the backgrounded sleep included.
    from tests.notify_servers import wait_for

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    assert wait_for(gone)


def test_bad_config():
    from flowsh.plugins import registry

    with pytest.raises(WorkflowError, match="notify channel 'sms' key 'run': is required"):
        registry("notifiers")["command"]("sms", {})
    with pytest.raises(WorkflowError, match="key 'env'"):
        registry("notifiers")["command"]("sms", {"run": "x", "env": "A=1"})
