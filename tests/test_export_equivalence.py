"""The exported bash script and `flowsh run` agree: same step statuses, outputs, exit code,
same files written, same order constraints, on every workflow of tests/corpus."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from flowsh.loader import load_workflow
from tests.exportkit import (
    CORPUS,
    check_order,
    export_script,
    prepare,
    run_engine,
    run_script,
    script_steps,
    written_files,
)

NAMES = sorted(p.stem for p in CORPUS.glob("*.yaml"))
EXPECTED_EXIT = {"failure": 1, "badoutput": 1}
# Files whose content depends on timing or pids, compared by other means.
VOLATILE = ("events.log", "grandchild.pid")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose; so is a reused pid (pids wrap fast under load):
    # a step's process carries FLOWSH_RUN_ID.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    return stat.split(")")[-1].split()[0] != "Z" and b"FLOWSH_RUN_ID=" in environ


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("inline", [False, True], ids=["by-path", "inline"])
def test_script_matches_engine(name: str, inline: bool, tmp_path: Path) -> None:
    engine_wf = prepare(name, tmp_path / "engine")
    script_wf = prepare(name, tmp_path / "script")

    engine_code, engine_steps = run_engine(engine_wf)
    script = export_script(script_wf, inline=inline)
    proc = run_script(script)

    assert proc.returncode == EXPECTED_EXIT.get(name, 0), proc.stderr
    assert engine_code == proc.returncode
    assert script_steps(name) == engine_steps
    assert written_files(script_wf.parent, VOLATILE) == written_files(engine_wf.parent, VOLATILE)

    # The CSV log (one file, both runs): the same rows per step, in the same order.
    by_run: dict[str, dict[str, list[str]]] = {}
    with (Path(os.environ["FLOWSH_HOME"]) / "logs" / "workflow_logs.csv").open() as fh:
        for row in list(csv.reader(fh))[1:]:
            by_run.setdefault(row[1], {}).setdefault(row[2], []).append(row[3])
    engine_rows, script_rows = by_run.values()
    assert script_rows == engine_rows

    wf = load_workflow(engine_wf)
    needs = {s.name: list(s.needs or ()) for s in wf.steps}
    for d in (engine_wf.parent, script_wf.parent):
        if (d / "events.log").exists():
            check_order(d / "events.log", needs, wf.concurrency)
        if (d / "grandchild.pid").exists():
            assert not _alive(int((d / "grandchild.pid").read_text())), f"grandchild alive ({d})"


def test_corpus_covers_the_issue() -> None:
    """chains, diamonds, fan-out, failures, retries, timeouts, always, outputs, params."""
    assert {"chain", "diamond", "fanout", "failure", "retries", "timeout", "outputs",
            "params", "conditions"} <= set(NAMES)


ROOT = Path(__file__).resolve().parent.parent


def _warehouse(db: Path) -> list[tuple[object, ...]]:
    import sqlite3

    with sqlite3.connect(db) as c:
        return c.execute("SELECT country, count(*), round(sum(amount_usd), 2) FROM orders "
                         "GROUP BY country ORDER BY country").fetchall()


def test_etl_example_fails_and_resumes_like_flowsh(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    """The issue's "done when": the exported ETL runs where flowsh is not installed, fails
    and resumes the same way `flowsh run` does (params of the failed run kept)."""
    import shutil

    from flowsh.store import open_backend

    engine_dir, script_dir = tmp_path / "engine", tmp_path / "script"
    shutil.copytree(ROOT / "examples" / "etl", engine_dir)
    shutil.copytree(ROOT / "examples" / "etl", script_dir)

    first = cli("run", str(engine_dir / "etl.yaml"), "simulate_failure=load", "day=2026-11-24")
    assert first.returncode == 1, first.stderr
    again = cli("run", str(engine_dir / "etl.yaml"), "--resume", "simulate_failure=")
    assert again.returncode == 0, again.stderr
    backend = open_backend(None)
    try:
        latest = backend.list_runs("etl", limit=1)[0]
        run = backend.load_run(latest.run_id)
    finally:
        backend.close()
    engine_steps = {n: (s.status, s.exit_code, s.outputs) for n, s in run.steps.items()}

    script = script_dir / "etl.sh"
    made = cli("export", str(script_dir / "etl.yaml"), "--bash", "--inline", "-o", str(script))
    assert made.returncode == 0, made.stderr
    shutil.rmtree(script_dir / "lib")  # embedded in the script
    no_flowsh = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ""}
    first = run_script(script, "simulate_failure=load", "day=2026-11-24", env=no_flowsh)
    assert first.returncode == 1, first.stdout + first.stderr
    failed_run = script_steps("etl")
    assert failed_run["load"][0] == "failed" and failed_run["validate"][0] == "skipped"
    again = run_script(script, "--resume", "simulate_failure=", env=no_flowsh)
    assert again.returncode == 0, again.stdout + again.stderr
    assert script_steps("etl") == engine_steps
    assert _warehouse(script_dir / "work" / "warehouse.db") == \
        _warehouse(engine_dir / "work" / "warehouse.db")
    from tests.exportkit import checkpoint

    data = checkpoint("etl")
    assert data["params"]["day"] == "2026-11-24"  # from the failed run
    assert data["steps"]["extract"]["attempts"] == 0  # not run again
