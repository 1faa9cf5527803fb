"""The exported script's scratch files (rt10 #3, rt11 #3): apart from completion records,
removed with the step, and no secret kept in clear in them."""

from __future__ import annotations

import os
from pathlib import Path

from tests.exportkit import export_script, run_script

SECRET = "hunter22-s3cr3t"


def _files_holding(root: Path, text: str) -> list[Path]:
    return [p for p in root.rglob("*")
            if p.is_file() and not p.is_symlink() and text.encode() in p.read_bytes()]


def test_if_stderr_and_mask_script_leave_no_secret(tmp_path: Path) -> None:
    wf = tmp_path / "flow.yaml"
    wf.write_text(
        "env: {API_TOKEN: placeholder}\n"
        "steps:\n"
        "  - name: a\n"
        "    if: 'echo \"checking $API_TOKEN\" >&2; true'\n"
        "    run: echo \"a sees $API_TOKEN\"\n"
        "  - name: b\n"
        "    needs: [a]\n"
        "    if: 'echo \"bad $API_TOKEN\" >&2; exit 2'\n"
        "    run: 'true'\n"
        "    continue_on_failure: true\n"
    )
    script = export_script(wf)
    home = tmp_path / "home"
    res = run_script(script, env={"FLOWSH_HOME": str(home), "API_TOKEN": SECRET})
    assert res.returncode == 0, res.stderr
    assert SECRET not in res.stdout + res.stderr
    run_dir = next((home / "exported").glob("*/runs/*"))
    # Scratch files went with their steps; records alone are in .done/.
    assert sorted(p.name for p in (run_dir / ".done").iterdir()) == ["a", "b"]
    assert not list((run_dir / "scratch").iterdir())
    assert _files_holding(home, SECRET) == []
    assert "bad ***" in (run_dir / ".done" / "b").read_text()
    assert os.stat(run_dir / "scratch").st_mode & 0o077 == 0
