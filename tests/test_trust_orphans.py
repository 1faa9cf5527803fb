"""No survivors (issue 11, item 6): whatever way a step ends, every descendant goes — plain
child, background grandchild, `setsid`, double fork — and flowsh does not wait for the pipe
they hold. For `flowsh run` and `flowsh wrap --timeout`."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import alive

KINDS = ("plain", "grandchild", "setsid", "doublefork")
# Each descendant writes its own pid once it runs, then sleeps holding the output pipe.
SPAWN = r"""
bash -c 'echo $$ > pids/plain.tmp; mv pids/plain.tmp pids/plain; exec sleep 300' &
( bash -c 'echo $$ > pids/grandchild.tmp; mv pids/grandchild.tmp pids/grandchild; exec sleep 300' & wait ) &
setsid bash -c 'echo $$ > pids/setsid.tmp; mv pids/setsid.tmp pids/setsid; exec sleep 300' &
( setsid bash -c 'echo $$ > pids/doublefork.tmp; mv pids/doublefork.tmp pids/doublefork; exec sleep 300' & )
while [ "$(ls pids | grep -vc tmp)" -lt 4 ]; do sleep 0.02; done
"""
GRACE = 20  # seconds: flowsh must be done long before it (nothing waits out the grace)


def _wait_files(pids: Path, proc: subprocess.Popen[bytes], deadline: float = 60) -> None:
    end = time.monotonic() + deadline
    while len([p for p in pids.iterdir() if p.suffix != ".tmp"]) < 4:
        if proc.poll() is not None and len(list(pids.iterdir())) < 4:
            out, _ = proc.communicate()
            raise AssertionError(f"flowsh ended early:\n{out.decode(errors='replace')}")
        assert time.monotonic() < end, "descendants never started"
        time.sleep(0.02)


def _survivors(pids: Path) -> list[str]:
    end = time.monotonic() + 5  # the kernel may take a moment to finish a SIGKILLed process
    left = KINDS
    while left and time.monotonic() < end:
        left = tuple(k for k in KINDS if _sleeper(int((pids / k).read_text())))
        time.sleep(0.05)
    return list(left)


def _sleeper(pid: int) -> bool:
    """Alive and still our `sleep 300` (not a process that got the pid since)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return alive(pid) and cmdline.startswith(b"sleep\x00300")


def _kill_if_ours(pid: int) -> None:
    if _sleeper(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _argv(runtime: str, tmp_path: Path, ending: str) -> list[str]:
    tail = "sleep 300" if ending in ("timeout", "TERM", "INT") else "exit 0"
    script = SPAWN + tail + "\n"
    (tmp_path / "step.sh").write_text(script)
    if runtime == "wrap":
        extra = ["--timeout", "3s"] if ending == "timeout" else []
        return [sys.executable, "-m", "flowsh", "wrap", *extra, "--kill-grace", f"{GRACE}s",
                "--", "bash", str(tmp_path / "step.sh")]
    timeout = "\n    timeout: 3s" if ending == "timeout" else ""
    (tmp_path / "flow.yaml").write_text(
        f"kill_grace: {GRACE}s\nsteps:\n  - name: spawn\n    run: bash step.sh{timeout}\n")
    return [sys.executable, "-m", "flowsh", "run", str(tmp_path / "flow.yaml")]


@pytest.mark.parametrize("runtime", ["run", "wrap"])
@pytest.mark.parametrize("ending", ["exit", "timeout", "TERM", "INT"])
def test_no_descendant_survives_its_step(tmp_path: Path, runtime: str, ending: str) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    proc = subprocess.Popen(_argv(runtime, tmp_path, ending), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_files(pids, proc)
        acted = time.monotonic()
        if ending in ("TERM", "INT"):
            proc.send_signal(signal.SIGTERM if ending == "TERM" else signal.SIGINT)
        out, _ = proc.communicate(timeout=GRACE + 60)
        took = time.monotonic() - acted
        survivors = _survivors(pids)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for k in KINDS:  # never leave a sleeper behind, even when the test fails
            f = pids / k
            if f.exists():
                _kill_if_ours(int(f.read_text()))
    assert survivors == [], out.decode(errors="replace")
    limit = GRACE / 2 + (3 if ending == "timeout" else 0)
    assert took < limit, f"flowsh took {took:.1f}s after the step ended: it waited on a pipe"
    expected = {"exit": 0, "timeout": 124 if runtime == "wrap" else 1, "TERM": 130,
                "INT": 130}[ending]
    assert proc.returncode == expected, out.decode(errors="replace")


def test_keep_children_leaves_the_daemon(tmp_path: Path) -> None:
    (tmp_path / "flow.yaml").write_text(
        "steps:\n  - name: start\n    keep_children: true\n"
        "    run: setsid bash -c 'echo $$ > daemon.pid; exec sleep 300' >/dev/null 2>&1 &"
        " while [ ! -s daemon.pid ]; do sleep 0.02; done\n")
    res = subprocess.run([sys.executable, "-m", "flowsh", "run", "flow.yaml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    pid = int((tmp_path / "daemon.pid").read_text())
    try:
        end = time.monotonic() + 30  # its pid is written just before it execs sleep
        while not _sleeper(pid) and alive(pid) and time.monotonic() < end:
            time.sleep(0.02)
        assert _sleeper(pid), Path(f"/proc/{pid}/cmdline").read_bytes()
    finally:
        _kill_if_ours(pid)


def test_subreaper_only_for_the_length_of_a_run(tmp_path: Path) -> None:
    """In a process embedding flowsh (this test runner), orphans go back to init after."""
    import ctypes

    from flowsh.engine import RunOptions, run_workflow
    from flowsh.loader import load_workflow

    libc = ctypes.CDLL(None, use_errno=True)
    flag = ctypes.c_int(-1)
    (tmp_path / "flow.yaml").write_text(
        "steps:\n  - {name: a, run: 'grep -q . /proc/self/status'}\n")
    rec = run_workflow(load_workflow(tmp_path / "flow.yaml"), RunOptions())
    assert rec.status == "succeeded"
    assert libc.prctl(37, ctypes.byref(flag), 0, 0, 0) == 0  # PR_GET_CHILD_SUBREAPER
    assert flag.value == 0
