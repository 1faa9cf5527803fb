"""The slot in the run record, history, status, logs and the report; sqlite's migration;
what schedulers start (SLOT-2, SLOT-6). The clock is FLOWSH_NOW: no test waits for a slot."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

from flowsh.builtin.state_sqlite import MIGRATIONS, SQLiteBackend
from flowsh.loader import load_workflow
from flowsh.scheduler import _flowsh_run
from flowsh.state import RunRecord

Cli = Callable[..., CompletedProcess[str]]
FLOW = """\
name: nightly
schedule: "CRON_TZ=Europe/Paris 0 3 * * *"
steps:
  - {name: a, run: 'echo "slot=$FLOWSH_SCHEDULED_TIME"'}
"""


def write(tmp_path: Path) -> Path:
    path = tmp_path / "flow.yaml"
    path.write_text(FLOW)
    return path


def test_scheduled_run_is_recorded_and_shown(tmp_path: Path, cli: Cli) -> None:
    flow = write(tmp_path)
    # Cron started it 40 minutes late: it still stands for 03:00 Paris time.
    res = cli("run", str(flow), "--scheduled", env={"FLOWSH_NOW": "2026-12-05T02:40:00Z"})
    assert res.returncode == 0, res.stderr
    assert "slot=2026-12-05T03:00:00+01:00" in res.stdout
    hist = cli("history", "nightly")
    assert hist.stdout.splitlines()[0].endswith("EXIT  SLOT")
    assert hist.stdout.splitlines()[1].endswith("0     2026-12-05T03:00:00+01:00")
    data = json.loads(cli("history", "nightly", "--json").stdout)
    assert data[0]["scheduled_time"] == "2026-12-05T03:00:00+01:00"
    run_id = data[0]["run_id"]
    assert "slot     2026-12-05T03:00:00+01:00" in cli("status", run_id).stdout
    events = [json.loads(line) for line in
              (Path(os.environ["FLOWSH_HOME"]) / "logs" / "events.jsonl").read_text().splitlines()]
    runs = [e for e in events if e["run_id"] == run_id and e["event"].startswith("run_")]
    assert [e["scheduled_time"] for e in runs] == ["2026-12-05T03:00:00+01:00"] * 2
    out = tmp_path / "r.html"
    assert cli("report", run_id, "-o", str(out)).returncode == 0
    assert 'id="run-slot">2026-12-05T03:00:00+01:00<' in out.read_text()


def test_unscheduled_history_reads_as_before(tmp_path: Path, cli: Cli) -> None:
    flow = write(tmp_path)
    assert cli("run", str(flow)).returncode == 0
    hist = cli("history", "nightly").stdout.splitlines()
    assert hist[0].endswith("TOOK EXIT") and "SLOT" not in hist[0]
    assert json.loads(cli("history", "nightly", "--json").stdout)[0]["scheduled_time"] is None


def test_bad_scheduled_time_is_one_line_exit_2(tmp_path: Path, cli: Cli) -> None:
    res = cli("run", str(write(tmp_path)), "--scheduled-time", "tomorrow")
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "--scheduled-time: 'tomorrow'" in res.stderr


def test_sqlite_store_of_an_older_flowsh_is_migrated_and_readable(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    SQLiteBackend(f"sqlite://{db}").close()
    # Back to the schema before slots (and what came after): what an older flowsh left.
    conn = sqlite3.connect(db)
    first = MIGRATIONS.index("ALTER TABLE runs ADD COLUMN scheduled_time TEXT")
    for statement in MIGRATIONS[first:]:
        _, _, table, _, _, column = statement.split()[:6]
        conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    conn.execute(f"PRAGMA user_version = {first}")
    conn.execute("INSERT INTO runs (run_id, workflow, params, status, started_at, step_names)"
                 " VALUES ('old-1', 'nightly', '{}', 'succeeded', 1.0, '[]')")
    conn.commit()
    conn.close()
    backend = SQLiteBackend(f"sqlite://{db}")
    try:
        assert backend.load_run("old-1").scheduled_time is None
        run = RunRecord(run_id="new-1", workflow="nightly", file=None, definition_hash="x",
                        params={}, started_at=2.0, scheduled_time="2026-12-05T03:00:00+01:00")
        backend.create_run(run)
        run.ended_at = 3.0
        backend.update_run(run)
        assert backend.load_run("new-1").scheduled_time == "2026-12-05T03:00:00+01:00"
    finally:
        backend.close()
    version = sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0]
    assert version == len(MIGRATIONS)


def test_scheduler_loop_children_compute_their_slot(tmp_path: Path) -> None:
    wf = load_workflow(write(tmp_path))
    assert _flowsh_run(wf)[-4:] == ["run", str(wf.path), "--resume", "--scheduled"]
