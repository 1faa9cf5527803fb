"""The exported bash script on its own: lint-clean, deterministic, and a real product
(--help/--list/--dry-run, resume, signals, lock, CSV log, Prometheus textfile, alerts)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowsh.export import render_bash
from flowsh.loader import load_workflow
from tests.exportkit import CORPUS, checkpoint, export_script, prepare, run_script, script_steps

KITCHEN = """\
name: kitchen
params: {day: "2026-01-01", api_token: "s3cret-value"}
env: {DATA_DIR: ./data}
env_file: .env
source: lib/etl.sh
concurrency: 2
kill_grace: 0.2s
defaults: {retry_delay: 0.05s, jitter: 0}
notify:
  channels:
    pager:
      type: command
      run: >-
        printf "%s|%s|%s|%s\\n" "$FLOWSH_ALERT_SEVERITY" "$FLOWSH_ALERT_EVENT"
        "$FLOWSH_ALERT_MESSAGE" "$(cat)" >> alerts.txt
    mail: {type: email, to: [ops@example.com]}
  routes: {critical: [pager, mail], warning: [pager], info: [log]}
  events: {run_failed: critical, step_retry: warning, run_succeeded: info}
monitor: {prometheus: true}
steps:
  - name: extract
    run: extract_data "$day"
  - name: report
    script: scripts/report.sh
    args: ["two words", "$day"]
  - name: plain
    needs: []
    script: scripts/plain.sh
  - name: flaky
    needs: [extract]
    retries: 1
    run: '[ -f flaky.once ] || { touch flaky.once; exit 1; }'
  - name: finish
    needs: [report, flaky, plain]
    run: echo "FROM_ENV_FILE=$FROM_ENV_FILE" >> "$FLOWSH_OUTPUT"
"""


@pytest.fixture
def kitchen(tmp_path: Path) -> Path:
    d = tmp_path / "kitchen"
    (d / "lib").mkdir(parents=True)
    (d / "scripts").mkdir()
    (d / "lib" / "etl.sh").write_text(
        'extract_data() { echo "ROWS=7" >> "$FLOWSH_OUTPUT"; echo "day=$1"; }\n'
    )
    report = d / "scripts" / "report.sh"
    report.write_text('#!/bin/bash\nprintf "%s\\n" "$@" > report.txt\n')
    report.chmod(0o755)
    (d / "scripts" / "plain.sh").write_text('echo "not executable, run by bash" > plain.txt\n')
    # The secret param's value: never in the script's text, read from here at run time.
    (d / ".env").write_text(
        '# comment\nexport FROM_ENV_FILE="dotenv value"\napi_token=s3cret-value\n'
    )
    (d / "kitchen.yaml").write_text(KITCHEN)
    return d / "kitchen.yaml"


def _lint(*scripts: Path) -> None:
    for script in scripts:
        subprocess.run(["bash", "-n", str(script)], check=True)
    # Every severity, style included: 0 findings.
    res = subprocess.run(["shellcheck", "--severity=style", *map(str, scripts)],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout


def test_corpus_scripts_are_lint_clean(tmp_path: Path) -> None:
    names = sorted(p.stem for p in CORPUS.glob("*.yaml"))
    _lint(*(export_script(prepare(n, tmp_path / n)) for n in names))


@pytest.mark.parametrize("inline", [False, True])
def test_kitchen_sink_is_lint_clean_and_deterministic(kitchen: Path, inline: bool) -> None:
    wf = load_workflow(kitchen)
    first = render_bash(wf, inline=inline)
    assert render_bash(load_workflow(kitchen), inline=inline) == first
    script = kitchen.with_suffix(".sh")
    script.write_text(first)
    _lint(script)
    # One function per step, each named after its step and source file.
    for step in ("extract", "report", "plain", "flaky", "finish"):
        assert f"\nstep_{step}() {{\n" in first
        assert f"# {step} (kitchen.yaml, step " in first
    assert "s3cret-value" not in first  # a secret default is read at run time


def test_cli_export_is_deterministic(kitchen: Path, cli) -> None:  # type: ignore[no-untyped-def]
    a = cli("export", str(kitchen), "--bash", "--inline")
    b = cli("export", str(kitchen), "--bash", "--inline")
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout and a.stdout.startswith("#!/usr/bin/env bash\n")
    out = kitchen.parent / "out.sh"
    c = cli("export", str(kitchen), "--bash", "--inline", "-o", str(out))
    assert c.returncode == 0, c.stderr
    assert out.read_text() == a.stdout.replace("kitchen.sh --help", "out.sh --help")
    assert out.stat().st_mode & 0o777 == 0o700


def test_kitchen_sink_runs(kitchen: Path, home: Path) -> None:
    script = export_script(kitchen)
    proc = run_script(script)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    d = kitchen.parent
    assert (d / "report.txt").read_text() == "two words\n$day\n"  # args are literal
    assert (d / "plain.txt").exists()
    steps = script_steps("kitchen")
    assert steps["extract"] == ("succeeded", 0, {"ROWS": "7"})
    assert steps["flaky"][0] == "succeeded"
    assert steps["finish"][2] == {"FROM_ENV_FILE": "dotenv value"}
    assert checkpoint("kitchen")["params"]["api_token"] == "***"
    # Alerts: the retry went to the command channel (env + JSON on stdin), success to the
    # log channel (flowsh's alerts.log line).
    sev, event, message, stdin = (d / "alerts.txt").read_text().rstrip("\n").split("|")
    assert (sev, event) == ("warning", "step_retry")
    assert message.startswith("step flaky of kitchen failed (exit code 1), retry in 0.050s")
    assert json.loads(stdin)["step"] == "flaky" and json.loads(stdin)["message"] == message
    run_id = checkpoint("kitchen")["run_id"]
    assert (home / "alerts.log").read_text().endswith(
        f" INFO kitchen {run_id} kitchen succeeded (run {run_id})\n")
    # The CSV log flowsh's monitor writes, in the same file and format.
    rows = list(csv.reader((home / "logs/workflow_logs.csv").open()))
    assert rows[0] == ["timestamp", "workflow_id", "step", "status", "message"]
    assert all(len(r) == 5 and r[1] == f"kitchen_{run_id}" for r in rows[1:])
    assert [r[3] for r in rows if r[2] == "flaky"] == ["running", "retrying", "running",
                                                       "succeeded"]
    assert [r[3] for r in rows if r[2] == "-"] == ["started", "succeeded"]
    # Prometheus textfile, as node_exporter's textfile collector reads it.
    from prometheus_client.parser import text_string_to_metric_families

    prom = home / "metrics/flowsh_kitchen.prom"
    assert prom.stat().st_mode & 0o777 == 0o644  # node_exporter runs as another user
    fams = {f.name: f for f in text_string_to_metric_families(prom.read_text())}
    assert fams["flowsh_run_last_status"].samples[0].value == 0
    assert fams["flowsh_run_last_success_timestamp_seconds"].samples[0].value > 0
    attempts = {s.labels["step"]: s.value for s in fams["flowsh_step_attempts"].samples}
    assert attempts["flaky"] == 2 and attempts["extract"] == 1
    # Private files.
    assert (home / "exported/kitchen").stat().st_mode & 0o777 == 0o700
    assert (home / "exported/kitchen/state_kitchen.json").stat().st_mode & 0o777 == 0o600


def test_failure_alerts_and_delegated_channel(kitchen: Path, tmp_path: Path) -> None:
    (kitchen.parent / "lib" / "etl.sh").write_text("extract_data() { return 4; }\n")
    script = export_script(kitchen)
    proc = run_script(script, "-q", env={"PATH": "/usr/bin:/bin"})  # no flowsh there
    assert proc.returncode == 1
    assert "alert channel mail needs flowsh on PATH" in proc.stderr
    assert "step extract failed: exit code 4" in proc.stderr
    assert "critical|run_failed|kitchen failed" in (kitchen.parent / "alerts.txt").read_text()
    assert "step extract of kitchen failed" not in (kitchen.parent / "alerts.txt").read_text()
    # With a `flowsh` on PATH, the channels the script cannot send go to `flowsh notify`.
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "flowsh").write_text('#!/bin/sh\nprintf "%s\\n" "$@" >> "$NOTIFY_LOG"\n')
    (fake / "flowsh").chmod(0o755)
    log = tmp_path / "notify.log"
    proc = run_script(script, "-q", env={"PATH": f"{fake}:/usr/bin:/bin", "NOTIFY_LOG": str(log)})
    assert proc.returncode == 1
    args = log.read_text().splitlines()
    assert args[:9] == ["notify", "send", str(kitchen), "--channel", "mail", "--severity",
                        "critical", "--event", "run_failed"]


def test_inline_script_needs_no_python_nor_the_original_files(
    kitchen: Path, tmp_path: Path
) -> None:
    """Embedded scripts and libraries; PATH holds bash and coreutils only."""
    script = export_script(kitchen, inline=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    moved = elsewhere / "kitchen.sh"
    shutil.move(script, moved)
    shutil.copy(kitchen.parent / ".env", elsewhere / ".env")
    shutil.rmtree(kitchen.parent)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("bash", "date", "sleep", "timeout", "cat", "mv", "cp", "mkdir", "rm",
                 "chmod", "dirname", "touch", "printf", "id", "flock", "mktemp"):
        found = shutil.which(tool)
        assert found, tool
        (bindir / tool).symlink_to(found)
    env = {"PATH": str(bindir), "HOME": str(tmp_path), "FLOWSH_HOME": os.environ["FLOWSH_HOME"]}
    proc = subprocess.run([str(bindir / "bash"), str(moved)], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (elsewhere / "report.txt").read_text() == "two words\n$day\n"
    assert script_steps("kitchen")["finish"][2] == {"FROM_ENV_FILE": "dotenv value"}


def test_help_list_dry_run_and_usage_errors(kitchen: Path) -> None:
    script = export_script(kitchen)
    h = run_script(script, "--help")
    assert h.returncode == 0
    assert "day=2026-01-01" in h.stdout and "api_token=***" in h.stdout
    lst = run_script(script, "--list")
    assert lst.stdout.splitlines() == ["extract\t", "plain\t", "report\textract",
                                       "flaky\textract", "finish\treport,flaky,plain"]
    dry = run_script(script, "--dry-run", "day=x")
    assert dry.returncode == 0 and "extract_data \"$day\"" in dry.stdout
    assert not (kitchen.parent / "report.txt").exists()
    for bad in (["--bogus"], ["notakeyvalue"], ["1x=2"], ["FLOWSH_NAME=x"], ["-j", "0"]):
        res = run_script(script, *bad)
        assert res.returncode == 2, bad
        assert res.stderr.count("\n") == 1, res.stderr  # one clear line


RESUMABLE = """\
name: resumable
kill_grace: 0.2s
steps:
  - name: first
    run: echo x >> first.count; echo "TOKEN=from-first" >> "$FLOWSH_OUTPUT"
  - name: second
    run: echo x >> second.count; [ -f fixed ] || exit 5
  - name: third
    run: echo "$TOKEN" > third.txt
"""


def test_fails_then_resumes_like_flowsh(tmp_path: Path) -> None:
    (tmp_path / "resumable.yaml").write_text(RESUMABLE)
    script = export_script(tmp_path / "resumable.yaml")
    first = run_script(script)
    assert first.returncode == 1
    assert script_steps("resumable")["third"][0] == "skipped"
    (tmp_path / "fixed").touch()
    again = run_script(script, "--resume")
    assert again.returncode == 0, again.stdout + again.stderr
    assert (tmp_path / "first.count").read_text() == "x\n"  # not run again
    assert (tmp_path / "second.count").read_text() == "x\nx\n"
    assert (tmp_path / "third.txt").read_text() == "from-first\n"  # output kept across runs
    data = checkpoint("resumable")
    assert data["status"] == "succeeded" and data["resumed_from"]
    # Nothing left to resume: a new run from the top.
    fresh = run_script(script, "--resume")
    assert fresh.returncode == 0
    assert (tmp_path / "first.count").read_text() == "x\nx\n"


SLOW = """\
name: slow
kill_grace: 0.2s
overlap: skip
steps:
  - name: wait
    run: |
      [ -f quick ] && exit 0
      sleep 30 &
      echo $! > grandchild.pid
      touch started
      wait
  - name: after
    run: touch after.txt
"""


def _wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    for _ in range(400):
        if path.exists():
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.025)
    raise AssertionError(f"{path} never appeared")


def test_sigterm_interrupts_kills_the_step_group_and_resumes(tmp_path: Path) -> None:
    (tmp_path / "slow.yaml").write_text(SLOW)
    script = export_script(tmp_path / "slow.yaml")
    proc = subprocess.Popen(["bash", str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for(tmp_path / "started", proc)
    # A second run while the first holds the lock: skipped with 75.
    second = run_script(script)
    assert second.returncode == 75, second.stderr
    assert "holds the lock" in second.stderr
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    grandchild = int((tmp_path / "grandchild.pid").read_text())

    def alive() -> bool:  # and still the step's (a pid is reused fast under load)
        try:
            env = Path(f"/proc/{grandchild}/environ").read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            return False
        return b"FLOWSH_RUN_ID=" in env

    for _ in range(500):
        if not alive():
            break
        time.sleep(0.02)
    assert not alive(), "the step's process group survived"
    data = checkpoint("slow")
    assert data["status"] == "interrupted"
    assert data["steps"]["wait"]["status"] == "interrupted"
    assert data["steps"]["after"]["status"] == "interrupted"
    # Resume: the lock was released; the interrupted steps run again.
    (tmp_path / "quick").touch()
    res = run_script(script, "--resume")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "after.txt").exists()
    assert checkpoint("slow")["resumed_from"] == data["run_id"]


def test_reserved_names_refused_at_export(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "r.yaml").write_text("params: {FLOWSH_X: 1}\nsteps: [{name: a, run: 'true'}]\n")
    res = cli("export", str(tmp_path / "r.yaml"), "--bash")
    assert res.returncode == 2
    assert "reserved" in res.stderr and "Traceback" not in res.stderr


def test_export_needs_exactly_one_format(kitchen: Path, cli) -> None:  # type: ignore[no-untyped-def]
    res = cli("export", str(kitchen))
    assert res.returncode == 2 and "choose one of" in res.stderr
    res = cli("export", str(kitchen), "--format", "nope")
    assert res.returncode == 2 and "unknown export format" in res.stderr
    assert sys.executable  # the CLI ran under this interpreter


def test_dry_run_prints_flowsh_plan(kitchen: Path, cli) -> None:  # type: ignore[no-untyped-def]
    script = export_script(kitchen)
    mine = run_script(script, "--dry-run").stdout.splitlines()
    theirs = cli("run", str(kitchen), "--dry-run").stdout.splitlines()

    def plan(lines: list[str]) -> list[str]:
        return [ln for ln in lines if not ln.startswith("params:")]

    assert plan(mine) == plan(theirs)
    assert "params: day=2026-01-01 api_token=***" in mine


def test_jobs_option_limits_parallel_steps(tmp_path: Path) -> None:
    from tests.exportkit import check_order

    wf = prepare("fanout", tmp_path)
    proc = run_script(export_script(wf), "-j", "1")
    assert proc.returncode == 0, proc.stderr
    needs = {s.name: list(s.needs or ()) for s in load_workflow(wf).steps}
    check_order(tmp_path / "events.log", needs, 1)


def test_delegated_channel_goes_through_real_flowsh_notify(tmp_path: Path) -> None:
    """A webhook channel: the script hands it to `flowsh notify send`, which POSTs it to a
    real HTTP server on loopback."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received: list[dict[str, object]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        (tmp_path / "hooked.yaml").write_text(
            "name: hooked\nkill_grace: 0.2s\n"
            "notify:\n"
            f"  channels: {{hook: {{type: webhook, url: 'http://127.0.0.1:{server.server_port}/'}}}}\n"
            "  events: {run_failed: critical}\n"
            "steps: [{name: bad, run: 'exit 9'}]\n"
        )
        script = export_script(tmp_path / "hooked.yaml")
        venv_bin = str(Path(sys.executable).parent)
        proc = run_script(script, env={"PATH": f"{venv_bin}:/usr/bin:/bin"})
        assert proc.returncode == 1
        assert "warning" not in proc.stderr, proc.stderr
    finally:
        server.shutdown()
    [alert] = received
    assert alert["event"] == "run_failed" and alert["severity"] == "critical"
    assert alert["run_id"] == checkpoint("hooked")["run_id"]
