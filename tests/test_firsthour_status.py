"""`flowsh status RUN` on a failed run shows why (the failed step's last log lines) and the
exact command to resume it, in one place (issue 18)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

from tests.conftest import run_cli

FLOW = """\
name: st
steps:
  - {name: fine, run: 'echo fine'}
  - name: breaks
    run: |
      for i in $(seq 1 30); do echo "line $i"; done
      [ -e fixed ] || { echo "db unreachable" >&2; exit 3; }
  - {name: after, run: 'echo after'}
"""


def _run_id(text: str) -> str:
    m = re.search(r"run (\d{8}T\d{6}-[0-9a-f]{8})", text)
    assert m, text
    return m.group(1)


def test_status_of_a_failed_run_shows_the_log_tail_and_the_resume_command(
    tmp_path: Path,
) -> None:
    flow = tmp_path / "st.yaml"
    flow.write_text(FLOW)
    r = run_cli("run", str(flow))
    assert r.returncode == 1
    run_id = _run_id(r.stderr)

    s = run_cli("status", run_id)
    assert s.returncode == 0, s.stderr
    out = s.stdout
    assert "breaks: last 20 line(s) of " in out
    tail = [ln.removeprefix("  | ") for ln in out.splitlines() if ln.startswith("  | ")]
    assert tail[-1] == "db unreachable" and tail[0] == "line 12" and len(tail) == 20
    assert "fine: last" not in out  # only failed steps
    [resume] = [ln for ln in out.splitlines() if ln.startswith("resume:")]
    command = resume.removeprefix("resume:").strip()
    assert command == f"flowsh resume {run_id}"

    # The command works as printed.
    (tmp_path / "fixed").touch()
    argv = shlex.split(command)
    done = subprocess.run([sys.executable, "-m", "flowsh", *argv[1:]], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    again = run_cli("status", run_id)
    assert "resume:" not in again.stdout and "last 20" not in again.stdout


def test_status_of_a_failed_wrap_says_there_is_no_file(tmp_path: Path) -> None:
    r = run_cli("wrap", "--name", "w", "-v", "--", "bash", "-c", "echo oops; exit 4",
                cwd=tmp_path)
    assert r.returncode == 4
    s = run_cli("status", "-w", "w")
    assert "  | oops" in s.stdout
    assert "no workflow file (flowsh wrap)" in s.stdout


def test_status_tail_is_safe_on_a_terminal_and_bounded(tmp_path: Path) -> None:
    """Review of issue 18: binary bytes and escape sequences in a log, a huge line, a log
    that is gone, and a run with 50 failed steps."""
    flow = tmp_path / "bad.yaml"
    steps = [
        "  - name: binary\n    needs: []\n    run: |\n"
        "      printf 'ok\\033]0;pwned\\007\\033[2J\\rXX\\000\\377\\n\\n'\n"
        "      head -c 100000 /dev/zero | tr '\\0' x; echo; echo last; exit 2\n",
        *(f"  - {{name: s{i}, needs: [], run: 'echo s{i} says; exit 1'}}\n" for i in range(49)),
    ]
    flow.write_text("name: bad\nconcurrency: 50\nsteps:\n" + "".join(steps))
    r = run_cli("run", str(flow))
    assert r.returncode == 1
    run_id = _run_id(r.stderr)
    s = run_cli("status", run_id)
    out = s.stdout
    assert s.returncode == 0 and "\x1b" not in out and "\r" not in out and "\x00" not in out
    tail = out.split("binary: last ", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    assert tail[-1] == "  | last"
    assert tail[-2].startswith("  | xxx") and tail[-2].endswith("…[cut at 500 characters]")
    assert len(tail[-2]) < 600
    assert "  | ok\\x1b]0;pwned\\x07\\x1b[2J\\x0dXX\\x00\ufffd" in tail
    assert "  | " in tail  # the blank line is kept
    # Five failed steps in detail (in the file's order), then one line for the rest.
    assert out.count(": last 1 line(s) of ") == 4
    assert "... and 45 more failed step(s): flowsh logs " in out
    assert len(out.splitlines()) < 120

    log = next(Path(ln.split(" of ", 1)[1]) for ln in out.splitlines()
               if ln.startswith("s0: last"))
    log.unlink()
    gone = run_cli("status", run_id).stdout
    assert f"s0: no log at {log} (the step printed nothing, or the log was deleted)" in gone
