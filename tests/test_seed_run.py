"""The seed's ETL bash file, unchanged, run by flowsh: run, kill, resume, import."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowsh.loader import load_workflow

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "legacy"
FLOWSH = [sys.executable, "-m", "flowsh"]


def flowsh(*args: str, cwd: Path, env: dict[str, str] | None = None
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FLOWSH, *args], cwd=cwd, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=120, check=False,
                          stdin=subprocess.DEVNULL)


@pytest.fixture
def legacy(tmp_path: Path) -> Path:
    d = tmp_path / "legacy"
    shutil.copytree(EXAMPLE, d, ignore=shutil.ignore_patterns("work"))
    return d


def sales(d: Path) -> list[tuple[str, str, int]]:
    with sqlite3.connect(d / "work" / "sales.db") as db:
        return sorted(db.execute("SELECT day, region, cents FROM sales").fetchall())


EXPECTED = [("2026-11-24", "NORTH", 12050), ("2026-11-24", "SOUTH", 8025),
            ("2026-11-25", "EAST", 1500), ("2026-11-25", "NORTH", 9999)]


def test_flowsh_runs_the_seed_file_as_is(legacy: Path, tmp_path: Path) -> None:
    # From another directory, as cron would: steps still run in the file's directory.
    r = flowsh("run", str(legacy / "etl.sh"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Executando" not in r.stdout  # the trailing etl_workflow "$@" never fired
    assert r.stdout.splitlines() == [
        "extracted 5 rows from input/sales.csv", "transformed 4 rows",
        "loaded into work/sales.db", "validated: 4 rows, total 315.74"]
    assert sales(legacy) == EXPECTED


def test_plain_bash_gives_the_same_result(legacy: Path) -> None:
    r = subprocess.run(["bash", "etl.sh"], cwd=legacy, capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert sales(legacy) == EXPECTED


def test_kill_mid_way_then_resume(legacy: Path) -> None:
    p = subprocess.Popen([*FLOWSH, "run", "etl.sh"], cwd=legacy,
                         env={**os.environ, "ETL_PAUSE": "30"},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (legacy / "work" / "clean.csv").exists():
        assert time.monotonic() < deadline and p.poll() is None
        time.sleep(0.05)
    time.sleep(0.3)  # load_data is sleeping now
    p.send_signal(signal.SIGTERM)
    _out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    hist = json.loads(flowsh("history", "--json", cwd=legacy).stdout)
    run_id = hist[0]["run_id"]
    assert hist[0]["status"] == "interrupted"
    assert not (legacy / "work" / "sales.db").exists() or sales(legacy) == []

    r = flowsh("resume", run_id, cwd=legacy, env={"ETL_PAUSE": "0"})
    assert r.returncode == 0, r.stderr
    assert "extracted" not in r.stdout and "transformed" not in r.stdout  # checkpoints kept
    assert "loaded into" in r.stdout and "validated: 4 rows" in r.stdout
    assert sales(legacy) == EXPECTED


def test_failure_fails_the_run_with_the_step_named(legacy: Path) -> None:
    r = flowsh("run", "etl.sh", cwd=legacy, env={"ETL_INPUT": "missing.csv"})
    assert r.returncode == 1
    assert "extract_data: failed" in r.stderr
    st = json.loads(flowsh("history", "--json", cwd=legacy).stdout)[0]
    assert st["status"] == "failed"


def test_alert_on_failure_from_user_config(legacy: Path, tmp_path: Path) -> None:
    pytest.importorskip("flowsh.notify", reason="alerts (flowsh.notify) not merged yet")
    alerts = tmp_path / "alerts.txt"
    cfg = Path(os.environ["XDG_CONFIG_HOME"]) / "flowsh" / "config.yaml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(
        "notify:\n"
        "  channels:\n"
        f"    ops: {{type: command, run: 'cat >> {alerts}'}}\n"
        "  routes: {critical: [ops]}\n"
        "  events: {run_failed: critical}\n")
    r = flowsh("run", "etl.sh", cwd=legacy, env={"ETL_INPUT": "missing.csv"})
    assert r.returncode == 1
    assert alerts.exists(), r.stderr
    assert "etl" in alerts.read_text()


def test_yaml_twin_is_the_import_and_the_same_workflow(legacy: Path) -> None:
    r = flowsh("import", "etl.sh", cwd=legacy)
    assert r.returncode == 0, r.stderr
    assert r.stdout == (EXAMPLE / "etl.yaml").read_text()  # the committed twin is current
    a = load_workflow(legacy / "etl.sh")
    b = load_workflow(legacy / "etl.yaml")
    assert a.model_dump(exclude={"path"}) == b.model_dump(exclude={"path"})
    r = flowsh("run", "etl.yaml", cwd=legacy)
    assert r.returncode == 0, r.stderr
    assert sales(legacy) == EXPECTED


def test_import_output_file_points_back_at_the_bash_file(legacy: Path, tmp_path: Path) -> None:
    out = tmp_path / "elsewhere" / "flow.yaml"
    r = flowsh("import", str(legacy / "etl.sh"), "-o", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "source: '../legacy/etl.sh'" in out.read_text()
    assert [s.name for s in load_workflow(out).steps] == [
        "extract_data", "transform_data", "load_data", "validate_data"]
    assert flowsh("import", str(legacy / "etl.sh"), "-o", str(out), cwd=tmp_path
                  ).returncode == 2  # no overwrite without --force


def test_import_of_a_broken_chain_is_a_usage_error(tmp_path: Path) -> None:
    f = tmp_path / "bad.sh"
    f.write_text("a() { :; }\ndeclare -A workflow=(\n  [start]=a\n  [a]=a\n)\n")
    r = flowsh("import", "bad.sh", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().endswith("bad.sh:4:3: the workflow chain loops: a -> a")


def test_data_param_is_the_first_argument(tmp_path: Path) -> None:
    f = tmp_path / "seed.sh"
    f.write_text('declare -A workflow=( [start]=show [show]=end )\n'
                 'show() { echo "args=$# one=<$1>"; }\nshow "top level"\n')
    r = flowsh("run", "seed.sh", "data=a b", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "args=1 one=<a b>\n"
    r = flowsh("run", "seed.sh", cwd=tmp_path)
    assert r.stdout == "args=1 one=<>\n"  # the seed's `$current "$data"` passes "" too


def test_validate_reports_a_seed_error_with_position(tmp_path: Path) -> None:
    f = tmp_path / "seed.sh"
    f.write_text("declare -A workflow=(\n  [start]=a\n  [a]=ghost\n  [ghost]=end\n)\n"
                 "a() { :; }\n")
    r = flowsh("validate", "seed.sh", cwd=tmp_path)
    assert r.returncode == 2
    assert "seed.sh:3:3: step function 'ghost' is not defined" in r.stderr


SEED_PROD = """\
#!/bin/bash
extract() { echo "extract <$1>" >> steps.log; }
load() { echo "load <$1>" >> steps.log; }
declare -A workflow=(["start"]="extract" ["extract"]="load" ["load"]="end")
execute_workflow() {
    local current=${workflow[start]}
    local data=$1
    while [ "$current" != "end" ]; do
        $current "$data" || return 1
        current=${workflow[$current]}
    done
}
execute_workflow "prod  east"
"""


def test_a_literal_argument_of_the_trailing_executor_is_the_data_param(tmp_path: Path) -> None:
    """`execute_workflow "prod  east"` ran every step with that $1: run and import keep it."""
    (tmp_path / "seed.sh").write_text(SEED_PROD)
    r = flowsh("run", "seed.sh", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "steps.log").read_text() == "extract <prod  east>\nload <prod  east>\n"
    r = flowsh("import", "seed.sh", "-o", "flow.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "flow.yaml").read_text()
    assert "  data: 'prod  east'" in text
    assert load_workflow(tmp_path / "flow.yaml").params == {"data": "prod  east"}
    (tmp_path / "steps.log").unlink()
    r = flowsh("run", "flow.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "steps.log").read_text() == "extract <prod  east>\nload <prod  east>\n"
    r = flowsh("run", "seed.sh", "data=dev", cwd=tmp_path)
    assert r.returncode == 0
    assert (tmp_path / "steps.log").read_text().endswith("extract <dev>\nload <dev>\n")


def test_arguments_import_cannot_carry_are_said(tmp_path: Path) -> None:
    (tmp_path / "seed.sh").write_text(
        SEED_PROD.replace('execute_workflow "prod  east"', 'main() { execute_workflow "$@"; }\n'
                          'main prod'))
    r = flowsh("import", "seed.sh", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "# note: seed.sh:14 ends with `main prod`; flowsh cannot carry" in r.stdout
    assert "  data: ''" in r.stdout
