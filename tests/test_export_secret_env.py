"""SECRET-1 in the exported script: a secret-named variable inherited from the environment
the script starts with is masked, as flowsh run masks it (rt11 #5)."""

from __future__ import annotations

import os
import shutil
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


def test_a_slow_masker_still_writes_the_whole_log(tmp_path: Path) -> None:
    """The masker (sed) reads what the step wrote after the step has ended: ending the
    step's processes must not stop it. A `sed` that starts late was stopped with the step
    and the log was empty (CI, a loaded machine)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    real_sed = shutil.which("sed")
    assert real_sed
    slow = bindir / "sed"
    slow.write_text(f"#!/bin/bash\nsleep 0.5\nexec {real_sed} \"$@\"\n")
    slow.chmod(0o755)
    wf = tmp_path / "flow.yaml"
    wf.write_text("steps:\n  - name: a\n    run: echo \"db is $DB_PASSWORD\"; echo second line\n")
    home = tmp_path / "home"
    res = run_script(export_script(wf), env={
        "FLOWSH_HOME": str(home), "DB_PASSWORD": SECRET,
        "PATH": f"{bindir}:{os.environ['PATH']}"})
    assert res.returncode == 0, res.stderr
    log = next((home / "exported").glob("*/runs/*/a.log")).read_text()
    assert log == "db is ***\nsecond line\n"
