"""flowsh.lock: real flock locks held by another process."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowsh.errors import LockHeldError, StateError
from flowsh.lock import hold_runner_lock, runner_alive, workflow_lock
from flowsh.state import flowsh_home

HOLDER = """
import sys
from flowsh.lock import workflow_lock
with workflow_lock(sys.argv[1], "wait") as lock:
    lock.note(sys.argv[2])
    print("held", flush=True)
    sys.stdin.readline()
"""

RUNNER = """
import sys
from pathlib import Path
from flowsh.lock import hold_runner_lock
fd = hold_runner_lock(Path(sys.argv[1]))
print("held" if fd is not None else "busy", flush=True)
sys.stdin.readline()
"""


def _start(code: str, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    assert ready, "the holder never reported"
    assert proc.stdout.readline().strip() in ("held", "busy")
    return proc


def _release(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("\n")
    proc.stdin.flush()
    proc.wait(timeout=30)


@pytest.fixture
def holder() -> Iterator[subprocess.Popen[str]]:
    proc = _start(HOLDER, "nightly", "run-123")
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_skip_names_the_holder(holder: subprocess.Popen[str]) -> None:
    with pytest.raises(LockHeldError) as exc, workflow_lock("nightly", "skip"):
        pass
    assert f"run run-123 (pid {holder.pid}) holds its lock (overlap: skip)" in str(exc.value)
    assert exc.value.exit_code == 75


def test_wait_gives_up_after_timeout(holder: subprocess.Popen[str]) -> None:
    t0 = time.monotonic()
    with pytest.raises(LockHeldError, match=r"gave up after waiting 0\.3s"), \
            workflow_lock("nightly", "wait", timeout=0.3):
        pass
    assert time.monotonic() - t0 >= 0.3


def test_wait_gets_the_lock_once_the_holder_ends(holder: subprocess.Popen[str]) -> None:
    _release(holder)
    with workflow_lock("nightly", "wait", timeout=10) as lock:
        assert lock.fd is not None


def test_other_workflows_and_allow_are_not_blocked(holder: subprocess.Popen[str]) -> None:
    with workflow_lock("other", "skip") as lock:
        assert lock.fd is not None
    with workflow_lock("nightly", "allow") as lock:
        assert lock.fd is None
        lock.note("x")  # nothing to note


def test_a_killed_holder_leaves_no_stale_lock(holder: subprocess.Popen[str]) -> None:
    holder.kill()
    holder.wait()
    with workflow_lock("nightly", "skip"):
        pass


def test_lock_file_private_and_released_on_exit() -> None:
    with workflow_lock("mine", "skip") as lock:
        lock.note("r1")
        path = flowsh_home() / "locks" / "mine.lock"
        assert path.read_text() == f"r1 {os.getpid()}\n"
        assert path.stat().st_mode & 0o777 == 0o600
    with workflow_lock("mine", "skip"):
        pass


def test_symlinked_lock_file_refused(tmp_path: Path) -> None:
    locks = flowsh_home() / "locks"
    locks.mkdir(parents=True, exist_ok=True, mode=0o700)
    (locks / "evil.lock").symlink_to(tmp_path / "target")
    with pytest.raises(StateError, match="is a symbolic link"), workflow_lock("evil", "skip"):
        pass
    assert not (tmp_path / "target").exists()


def test_runner_lock_between_processes(tmp_path: Path) -> None:
    assert runner_alive(tmp_path) is None  # no lock file: this host cannot tell
    proc = _start(RUNNER, str(tmp_path))
    try:
        assert runner_alive(tmp_path) is True
        assert hold_runner_lock(tmp_path) is None  # two runners of one run: refused
    finally:
        _release(proc)
    assert runner_alive(tmp_path) is False
    held = hold_runner_lock(tmp_path)
    assert held is not None
    try:
        assert runner_alive(tmp_path) is True
    finally:
        held.release()
    assert runner_alive(tmp_path) is False
