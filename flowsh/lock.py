"""Overlap locks (the cron problem) and the runner's liveness lock.

Both are flock(2) locks on files under $FLOWSH_HOME: the kernel drops them when the
process dies, however it dies, so a crash never leaves a stale lock behind.

A flock spans one host. A state backend shared by several hosts can provide both locks
itself (`LockingBackend`: PostgreSQL's advisory locks, dropped by the server the moment the
holder's connection goes): `workflow_lock`, `hold_runner_lock` and `runner_alive` use the
backend's when it has them, and the flock otherwise.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from flowsh.errors import LockHeldError, StateError
from flowsh.state import ensure_private_dir, flowsh_home

if TYPE_CHECKING:
    from flowsh.state import RunRecord


class Releasable(Protocol):
    def release(self) -> None: ...


@runtime_checkable
class LockingBackend(Protocol):
    """What a state backend implements to provide the locks itself (all three or none).

    `workflow_lock`: the overlap lock (`overlap` is skip or wait, never allow), raising
    LockHeldError as the flock does. `hold_runner`: the run's liveness lock, None when
    another process holds it. `runner_alive`: whether the run's liveness lock is held
    now, None when the backend cannot tell.
    """

    def workflow_lock(self, name: str, overlap: str,
                      timeout: float | None) -> AbstractContextManager[WorkflowLock]: ...

    def hold_runner(self, run_id: str) -> Releasable | None: ...

    def runner_alive(self, run: RunRecord) -> bool | None: ...


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


def workflow_lock(name: str, overlap: str, timeout: float | None = None,
                  backend: Any = None) -> AbstractContextManager[WorkflowLock]:
    """Hold the workflow's lock for a run. `overlap`: skip | wait | allow.

    The backend's lock when it provides one (it spans every host that shares the state),
    else a flock under $FLOWSH_HOME (this host only)."""
    if overlap != "allow" and isinstance(backend, LockingBackend):
        return backend.workflow_lock(name, overlap, timeout)
    return _file_lock(name, overlap, timeout)


@contextmanager
def _file_lock(name: str, overlap: str, timeout: float | None) -> Iterator[WorkflowLock]:
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


class RunnerLock:
    """The run's liveness lock: the flock in its run directory, plus the backend's."""

    def __init__(self, fd: int, extra: Releasable | None = None) -> None:
        self.fd, self.extra = fd, extra

    def release(self) -> None:
        if self.extra is not None:
            self.extra.release()
            self.extra = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def hold_runner_lock(run_dir: Path, backend: Any = None,
                     run_id: str | None = None) -> RunnerLock | None:
    """Taken by the process running a run, for as long as it runs; see `runner_alive`.

    None when another process holds it: that run is being run (resumed) right now, and two
    runners of one run would run its steps twice. With a `LockingBackend`, its lock on the
    run is taken too (a runner on another host holds that one, not this host's flock).
    """
    fd = _open_lock(run_dir / "runner.lock")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    extra = None
    if isinstance(backend, LockingBackend) and run_id is not None:
        try:
            extra = backend.hold_runner(run_id)
        except BaseException:
            os.close(fd)
            raise
        if extra is None:
            os.close(fd)
            return None
    return RunnerLock(fd, extra)


def runner_alive(run_dir: Path, backend: Any = None,
                 run: RunRecord | None = None) -> bool | None:
    """True/False when this host can tell (the run's lock file is here, or the backend
    holds its locks), else None."""
    if isinstance(backend, LockingBackend) and run is not None:
        alive = backend.runner_alive(run)
        if alive is not None:
            return alive
    path = run_dir / "runner.lock"
    try:
        # Never a link planted there (ELOOP: "cannot tell"), nor a FIFO's blocking open.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
