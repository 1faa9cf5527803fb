"""The live terminal view under a real pseudo-terminal; plain lines without one."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import Any

from tests.conftest import run_cli

FLOW = """\
name: tty
kill_grace: 0.2s
steps:
  - name: quick
    run: echo quick
  - name: slow
    run: sleep 1.2; echo slow
    retries: 1
  - name: after
    run: echo after
"""
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def _run_in_pty(args: list[str], cwd: Path) -> tuple[int, str]:
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "flowsh", *args], cwd=cwd, env=env,
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    while True:
        ready, _, _ = select.select([master], [], [], 30)
        if not ready:
            proc.kill()
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=30), b"".join(chunks).decode("utf-8", "replace")


def test_tty_shows_live_table_with_estimates(home: Path, write_flow: Any) -> None:
    flow = write_flow(FLOW, "tty.yaml")
    first = run_cli("run", str(flow))  # not a terminal: plain lines, and a history
    assert first.returncode == 0, first.stderr
    assert "\x1b[" not in first.stderr and "estimate" not in first.stderr
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d slow: succeeded in", first.stderr, re.M)

    code, raw = _run_in_pty(["run", str(flow)], flow.parent)
    assert code == 0, raw
    assert "\x1b[" in raw  # colour and cursor movement: a live view was drawn
    text = ANSI.sub("", raw)
    header = re.search(r"step\s+state\s+attempt\s+elapsed\s+estimate", text)
    assert header, text
    # While `slow` runs, its row shows the state, attempt 1 of 2 and the estimate from the
    # first run (about 1.2s), with the time left.
    row = re.search(r"▶\s+slow\s+running\s+1/2\s+\S+\s+~1\.\ds \((\S+) left\)", text)
    assert row, text
    assert re.search(r"✓\s+quick\s+succeeded\s+1/1", text)
    assert "run " in text and "succeeded in" in text  # the summary line stays


def test_tty_shows_a_step_waiting_for_its_pool(home: Path, write_flow: Any) -> None:
    flow = write_flow("""\
        name: pooled
        pools: {db: 1}
        steps:
          - {name: first, pool: db, run: sleep 1}
          - {name: second, pool: db, needs: [], run: 'true'}
        """, "pooled.yaml")
    code, raw = _run_in_pty(["run", str(flow)], flow.parent)
    assert code == 0, raw
    text = ANSI.sub("", raw)
    assert re.search(r"·\s+second\s+waiting for pool db\s", text), text
