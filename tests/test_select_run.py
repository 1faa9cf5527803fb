"""flowsh run --only/--from/--until end to end (docs/semantics.md SELECT): what a run
interrupted mid-selection leaves for its resume."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path


def test_an_interrupted_selection_resumes_with_the_same_steps_left_out(
        write_flow: Callable[..., Path], tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    path = write_flow("""
        name: intr
        steps:
          - {name: a, run: 'echo A=1 >> "$FLOWSH_OUTPUT"'}
          - name: b
            run: |
              echo "b $A" >> ran
              if [ -e stop ]; then rm stop; kill -INT "$PPID"; sleep 30; fi
          - {name: c, run: 'echo c >> ran'}
        """)
    assert cli("run", str(path), "-q", cwd=tmp_path).returncode == 0
    (tmp_path / "ran").unlink()
    (tmp_path / "stop").touch()
    res = cli("run", str(path), "--only", "b", cwd=tmp_path)
    assert res.returncode == 130, res.stderr
    status = json.loads(cli("status", "--json").stdout)
    steps = status["steps"]
    assert steps["b"]["status"] == "interrupted"
    # c was still waiting for b: left out all the same, not "interrupted" (a resume would
    # run it).
    assert (steps["c"]["status"], steps["c"]["skip_reason"]) == ("skipped", "not-selected")
    res = cli("run", str(path), "--resume", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "ran").read_text() == "b 1\nb 1\n"
    status = json.loads(cli("status", "--json").stdout)
    assert {n: s["status"] for n, s in status["steps"].items()} == {
        "a": "skipped", "b": "succeeded", "c": "skipped"}


def test_dry_run_with_a_selection_plans_only_the_selected_steps(
        write_flow: Callable[..., Path], tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    path = write_flow("""
        name: plan
        steps:
          - {name: a, run: 'echo a'}
          - {name: b, run: 'echo b', needs: [a]}
          - {name: c, run: 'echo c', needs: [b]}
        """)
    # No run yet: b would need a's outputs from a successful run, and the run would be
    # refused (SELECT-3), so the plan is too (fix15: it printed a plan, exit 0).
    res = cli("run", str(path), "--from", "b", "--dry-run", cwd=tmp_path)
    assert res.returncode == 2 and "needs the outputs of 'a'" in res.stderr, res.stderr
    assert cli("run", str(path), cwd=tmp_path).returncode == 0
    res = cli("run", str(path), "--from", "b", "--dry-run", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert "selected: b, c" in lines
    assert [ln for ln in lines if ln.startswith("stage")] == ["stage 1: b", "stage 2: c"]
    assert not any(ln.startswith("  a:") for ln in lines)
