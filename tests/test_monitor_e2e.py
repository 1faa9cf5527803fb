"""End to end: a real workflow through the real CLI produces every monitoring output."""

from __future__ import annotations

import csv
import json
import re
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import run_cli

ETL = """\
name: etl
params: {day: "2026-11-25"}
env: {API_TOKEN: tok-very-secret-123}
monitor: {prometheus: true}
kill_grace: 0.2s
steps:
  - name: extract
    run: |
      echo "extracting $day with $API_TOKEN"
      n=$(cat .count 2>/dev/null || echo 0); echo $((n+1)) > .count
      [ "$n" -ge 1 ] || { echo "flaky network, with \\"quotes\\"" >&2; exit 7; }
    retries: 2
    retry_delay: 0.1s
  - name: prices
    needs: []
    run: echo prices
  - name: transform
    needs: [extract, prices]
    run: echo transform
  - name: load
    run: |
      echo loaded
      if [ "$FAIL_LOAD" = 1 ]; then echo "db refused $API_TOKEN" >&2; exit 3; fi
  - name: report
    needs: [transform]
    run: echo report
"""


class _Gateway(BaseHTTPRequestHandler):
    seen: list[tuple[str, str, bytes]] = []

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.seen.append((self.command, self.path, body))
        self.send_response(202)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def gateway() -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    seen: list[tuple[str, str, bytes]] = []
    server = HTTPServer(("127.0.0.1", 0), type("H", (_Gateway,), {"seen": seen}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def _run(flow: Path, *args: str, **env: str) -> str:
    (flow.parent / ".count").unlink(missing_ok=True)
    res = run_cli("run", str(flow), *args, env=env)
    assert res.returncode in (0, 1), res.stderr
    m = re.search(r"run (\d{8}T\d{6}-[0-9a-f]+) (succeeded|failed)", res.stderr)
    assert m, res.stderr
    return m.group(1)


def test_etl_run_produces_all_outputs(
    home: Path, write_flow: Any, gateway: tuple[str, list[Any]], tmp_path: Path
) -> None:
    url, pushed = gateway
    flow = write_flow(ETL, "etl.yaml")
    ok1 = _run(flow)
    ok2 = _run(flow, "--metrics-push", url)
    bad = _run(flow, FAIL_LOAD="1")

    # CSV: the seed's columns, each run's rows, quoting intact, nothing secret.
    path = home / "logs" / "workflow_logs.csv"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["timestamp", "workflow_id", "step", "status", "message"]
    mine = [(r["step"], r["status"]) for r in rows if r["workflow_id"] == f"etl_{bad}"]
    assert ("extract", "retrying") in mine and ("load", "failed") in mine
    assert mine[0] == ("-", "started") and mine[-1] == ("-", "failed")
    assert "tok-very-secret-123" not in path.read_text()

    # JSON Lines: one object per event, all three runs.
    events = [json.loads(x) for x in (home / "logs" / "events.jsonl").read_text().splitlines()]
    assert {e["run_id"] for e in events} == {ok1, ok2, bad}
    retry = next(e for e in events if e["event"] == "step_retrying" and e["run_id"] == bad)
    assert (retry["step"], retry["attempt"], retry["exit_code"]) == ("extract", 1, 7)
    fin = [e for e in events if e["event"] == "run_finished"]
    assert [(e["status"], e["exit_code"]) for e in fin] == [
        ("succeeded", 0), ("succeeded", 0), ("failed", 1)]

    # Prometheus textfile: the last run failed, the last success time is kept.
    prom = (home / "metrics" / "flowsh_etl.prom").read_text()
    fams = {f.name: f for f in text_string_to_metric_families(prom)}
    status = fams["flowsh_run_last_status"].samples[0]
    assert (status.labels, status.value) == ({"workflow": "etl"}, 1)
    attempts = {s.labels["step"]: s.value for s in fams["flowsh_step_attempts"].samples}
    assert attempts == {"extract": 2, "prices": 1, "transform": 1, "load": 1, "report": 1}
    assert fams["flowsh_run_last_success_timestamp_seconds"].samples[0].value > 0

    # The Pushgateway got exactly the second run's metrics.
    assert len(pushed) == 1 and pushed[0][0] == "PUT"
    body = pushed[0][2].decode()
    assert 'flowsh_run_last_status{workflow="etl"} 0' in body

    # stats --json over the history.
    res = run_cli("stats", "etl", "--json")
    assert res.returncode == 0, res.stderr
    st = json.loads(res.stdout)
    assert (st["runs"], st["succeeded"], st["failed"]) == (3, 2, 1)
    assert st["steps"]["extract"]["retried"] == 3
    assert st["flakiest"][:2] == ["extract", "load"]
    text = run_cli("stats", str(flow)).stdout  # a file works as well as a name
    assert "success rate  66.7%" in text

    # The report of the failed run.
    out = tmp_path / "out" / "report.html"
    # A prefix: all but the last two hex digits (17 characters was one hex digit after the
    # second, which the other runs of that second shared one time in several).
    res = run_cli("report", bad[:-2], "-o", str(out))
    assert res.returncode == 0, res.stderr
    html = out.read_text()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert '<g class="dag-node st-failed" data-step="load"' in html
    assert "db refused ***" in html and "tok-very-secret-123" not in html
    row = html[html.index('<g class="gantt-row" data-step="extract"'):]
    assert row[:row.index("</g>")].count('class="gantt-bar') == 2  # the retry is drawn
    assert "of 2 earlier runs" in html


def test_monitor_commands_report_errors_cleanly(home: Path) -> None:
    res = run_cli("report", "nope")
    assert res.returncode == 4 and "no run 'nope'" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("stats", "ghost")
    assert res.returncode == 4 and "no finished runs of workflow 'ghost'" in res.stderr


def test_monitoring_can_be_switched_off(home: Path, write_flow: Any) -> None:
    flow = write_flow("name: quiet\nmonitor: {csv: false, jsonl: false, prometheus: false}\n"
                      "steps: [{name: a, run: 'echo hi'}]\n")
    res = run_cli("run", str(flow))
    assert res.returncode == 0, res.stderr
    assert not (home / "logs").exists() and not (home / "metrics").exists()
