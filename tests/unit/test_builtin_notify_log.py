"""flowsh.builtin.notify_log: alert lines in a log file."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flowsh import plugins
from flowsh.builtin.notify_log import LogNotifier
from flowsh.errors import WorkflowError
from flowsh.notify import Alert
from flowsh.state import flowsh_home


def alert(tmp_path: Path, **kw: object) -> Alert:
    return Alert(severity="critical", event="run_failed", workflow="w", run_id="r1",
                 subject="w failed:\nstep b", file=str(tmp_path / "flow.yaml"), **kw)  # type: ignore[arg-type]


def test_registered() -> None:
    assert plugins.registry("notifiers")["log"] is LogNotifier


def test_text_line_default_path(tmp_path: Path) -> None:
    LogNotifier("ops", {}).send(alert(tmp_path))
    log = flowsh_home() / "alerts.log"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d CRITICAL w r1 w failed: step b\n",
                        log.read_text())
    assert log.stat().st_mode & 0o777 == 0o600


def test_json_line_relative_path_and_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    n = LogNotifier("ops", {"path": "alerts.jsonl", "format": "json", "stderr": True})
    n.send(alert(tmp_path, exit_code=3))
    data = json.loads((tmp_path / "alerts.jsonl").read_text())
    assert data["exit_code"] == 3 and data["run_id"] == "r1" and "text" not in data
    assert capsys.readouterr().err.startswith("flowsh: alert: {")


@pytest.mark.parametrize(("config", "message"), [
    ({"format": "xml"}, "must be 'text' or 'json'"),
    ({"stderr": "yes"}, "must be true or false"),
    ({"pth": "x"}, "pth"),
])
def test_bad_config(config: dict[str, object], message: str) -> None:
    with pytest.raises(WorkflowError, match=message):
        LogNotifier("ops", config)


def test_default_path_refuses_a_link(tmp_path: Path) -> None:
    home = flowsh_home()
    home.mkdir(parents=True, exist_ok=True)
    (home / "alerts.log").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError):
        LogNotifier("ops", {}).send(alert(tmp_path))
    assert not (tmp_path / "elsewhere").exists()


SENDER = """
import sys
from flowsh.builtin.notify_log import LogNotifier
from flowsh.notify import Alert
n = LogNotifier("ops", {"path": sys.argv[1]})
for i in range(300):
    n.send(Alert(severity="info", event="run_succeeded", workflow="w", run_id=sys.argv[2] * 300,
                 subject="s"))
"""


def test_concurrent_senders_never_interleave(tmp_path: Path) -> None:
    p = tmp_path / "a.log"
    procs = [subprocess.Popen([sys.executable, "-c", SENDER, str(p), c], env=os.environ.copy())
             for c in "xy"]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    lines = p.read_text().splitlines()
    assert len(lines) == 600
    assert all(ln.endswith((" " + "x" * 300 + " s", " " + "y" * 300 + " s")) for ln in lines)
