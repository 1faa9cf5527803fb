"""The exported script on a full disk (red team rt11 #14): it printed `succeeded` and
exited 0 with a later step never run. A record or checkpoint it cannot write is exit 3,
and a resume once there is room finishes the run with nothing run twice."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

FLOW = """\
steps:
  - name: a
    run: echo "V=1" >> "$FLOWSH_OUTPUT"; echo a >> ran
  - name: fill
    run: head -c 600000 /dev/zero | tr '\\0' x; echo
  - name: c
    run: echo "c $V" >> ran
"""



def test_a_full_disk_stops_the_script_with_exit_3_and_resume_finishes(
        tmp_path: Path, tiny_disk: Path) -> None:
    (tmp_path / "flow.yaml").write_text(FLOW)
    subprocess.run([sys.executable, "-m", "flowsh", "export", "--bash", "flow.yaml", "-o",
                    "flow.sh"], cwd=tmp_path, check=True, capture_output=True)
    home = tiny_disk / "home"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "FLOWSH_HOME": str(home)}
    res = subprocess.run(["bash", "flow.sh"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120, check=False)
    assert res.returncode == 3, res.stdout + res.stderr
    assert "cannot record step fill" in res.stderr and "succeeded" not in res.stdout
    assert (tmp_path / "ran").read_text() == "a\n"
    for log in home.rglob("fill.log"):
        log.unlink()
    subprocess.run(["mount", "-o", "remount,size=8m", str(tiny_disk)], check=True)
    res = subprocess.run(["bash", "flow.sh", "--resume"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "ran").read_text() == "a\nc 1\n"  # a once; c got a's output
    assert os.listdir(tiny_disk)
