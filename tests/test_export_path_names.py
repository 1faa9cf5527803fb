"""A workflow file whose name holds a line break is refused by flowsh export (rt10 #10):
its name went unquoted into the script's comments, and the rest of it ran as code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_export_refuses_a_path_with_a_line_break(tmp_path: Path) -> None:
    wf = tmp_path / "f\necho INJECTED >injected\n.yaml"
    wf.write_text("steps:\n  - name: a\n    run: echo a > out.a\n")
    res = subprocess.run(
        [sys.executable, "-m", "flowsh", "export", "--bash", str(wf), "-o",
         str(tmp_path / "flow.sh")],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "FLOWSH_HOME": str(tmp_path / "home")})
    assert res.returncode == 2, res.stderr
    assert "control character" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "flow.sh").exists()
