"""SECRET-1 in the exported script: a secret-named variable inherited from the environment
the script starts with is masked, as flowsh run masks it (rt11 #5)."""

from __future__ import annotations

from pathlib import Path

from tests.exportkit import export_script, run_script

SECRET = "inherited-pa55word"


def test_inherited_secret_is_masked(tmp_path: Path) -> None:
    wf = tmp_path / "flow.yaml"
    wf.write_text("steps:\n  - name: a\n    run: echo \"db is $DB_PASSWORD\"; exit 3\n")
    home = tmp_path / "home"
    res = run_script(export_script(wf), env={"FLOWSH_HOME": str(home), "DB_PASSWORD": SECRET})
    assert res.returncode == 1, res.stderr
    log = next((home / "exported").glob("*/runs/*/a.log")).read_text()
    assert "db is ***" in log and SECRET not in log
    leaked = [p for p in home.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaked == []
