"""Overlap locks (the cron problem) and the runner's liveness lock.

Both are flock(2) locks on files under $FLOWSH_HOME: the kernel drops them when the
process dies, however it dies, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flowsh.errors import LockHeldError, StateError
from flowsh.state import ensure_private_dir, flowsh_home


class WorkflowLock:
    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def note(self, run_id: str | None) -> None:
        """Record who holds the lock, for the message a skipped run prints."""
        if self.fd is None:
            return
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{run_id or '-'} {os.getpid()}\n".encode(), 0)


def _holder(fd: int) -> str:
    try:
        run_id, pid = os.pread(fd, 200, 0).decode().split()
    except ValueError:
        return "another run"
    return f"run {run_id} (pid {pid})" if run_id != "-" else f"pid {pid}"


def _open_lock(path: Path) -> int:
    """O_NOFOLLOW: a link planted there would have flowsh write (`note`) to its target."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StateError(f"{path}: is a symbolic link; flowsh does not follow links under "
                             "its state directory (O_NOFOLLOW)") from None
        raise StateError(f"{path}: cannot open lock file: {exc.strerror}") from None


@contextmanager
def workflow_lock(name: str, overlap: str, timeout: float | None = None) -> Iterator[WorkflowLock]:
    """Hold the workflow's lock for a run. `overlap`: skip | wait | allow."""
    if overlap == "allow":
        yield WorkflowLock(None)
        return
    path = ensure_private_dir(flowsh_home() / "locks") / f"{name}.lock"
    fd = _open_lock(path)
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if overlap == "skip":
                    raise LockHeldError(
                        f"workflow {name!r} is already running: {_holder(fd)} holds its lock "
                        "(overlap: skip)"
                    ) from None
                if deadline is not None and time.monotonic() >= deadline:
                    raise LockHeldError(
                        f"workflow {name!r}: gave up after waiting {timeout:g}s for "
                        f"{_holder(fd)} to finish (overlap: wait)"
                    ) from None
                time.sleep(0.1)
        lock = WorkflowLock(fd)
        lock.note(None)
        yield lock
    finally:
        os.close(fd)  # releases the flock


def hold_runner_lock(run_dir: Path) -> int | None:
    """Taken by the process running a run, for as long as it runs; see `runner_alive`.

    None when another process holds it: that run is being run (resumed) right now, and two
    runners of one run would run its steps twice.
    """
    fd = _open_lock(run_dir / "runner.lock")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def runner_alive(run_dir: Path) -> bool | None:
    """True/False when this host can tell (the run's lock file is here), else None."""
    path = run_dir / "runner.lock"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
