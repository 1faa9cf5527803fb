"""Steps as local OS processes: the built-in executor.

One selector loop, no threads: each step's combined stdout/stderr pipe and a pidfd (the
kernel's "this process exited" handle) are watched together, so output streams live,
exits are seen at once, and timeouts are enforced from the same loop. Every step runs in
its own session and process group; a timeout or Ctrl-C signals the whole group (TERM,
then KILL after the grace period), and whatever a step leaves running in its group when
its main process exits is stopped the same way, so no grandchild outlives its step.

A step's log file is created when its first output arrives: creating a file costs more
than everything else flowsh does for a step that prints nothing (`true`, `mkdir -p`...).
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from flowsh.executor import EXIT_TIMEOUT, Outcome, OutputCallback, StepRequest, WakePipe

_READ = 65536
_HAS_PIDFD = hasattr(os, "pidfd_open")


@dataclass
class _Job:
    req: StepRequest
    proc: subprocess.Popen[bytes] | None
    started: float
    log: int | None = None  # fd of the log file, opened at the first output
    pipe: int | None = None
    pidfd: int | None = None
    deadline: float | None = None  # when the timeout fires
    kill_at: float | None = None  # when TERM turns into KILL
    exit_status: int | None = None  # raw returncode once reaped
    exited_at: float | None = None
    timed_out: bool = False
    interrupted: bool = False
    partial: bytes = b""
    extra: dict[str, str] = field(default_factory=dict)


class LocalExecutor:
    """Runs each step as a process group on this machine."""

    def __init__(
        self,
        on_output: OutputCallback | None = None,
        mask: Callable[[str], str] | None = None,
        **options: object,
    ) -> None:
        if options:
            from flowsh.errors import UsageError

            got = ", ".join(options)
            raise UsageError(f"executor 'local' takes no executor_options (got {got})")
        self.on_output = on_output
        self.mask = mask
        self._sel = selectors.DefaultSelector()
        self._jobs: dict[str, _Job] = {}
        self._done: list[tuple[str, Outcome]] = []
        self._wake = WakePipe()
        self._sel.register(self._wake.read_fd, selectors.EVENT_READ, ("wake", None))

    # -- interface ------------------------------------------------------------------

    def start(self, request: StepRequest) -> int | None:
        now = time.time()
        stdin: int | None = subprocess.DEVNULL
        stdin_fd: int | None = None
        if request.stdin is not None:
            stdin_fd = os.open(request.stdin, os.O_RDONLY)
            stdin = stdin_fd
        try:
            proc = subprocess.Popen(
                request.argv,
                cwd=request.cwd,
                env=request.env,
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            end = time.time()
            reason = f"cannot start {request.argv[0]!r}: {exc.strerror}"
            code = 126 if exc.errno in (errno.EACCES, errno.ENOEXEC) else 127
            self._done.append((request.key, Outcome(
                exit_code=code, started_at=now, ended_at=end, error=reason)))
            return None
        finally:
            if stdin_fd is not None:
                os.close(stdin_fd)
        job = _Job(req=request, proc=proc, started=now)
        if request.timeout:
            job.deadline = now + request.timeout
        assert proc.stdout is not None
        job.pipe = proc.stdout.fileno()
        os.set_blocking(job.pipe, False)
        self._sel.register(job.pipe, selectors.EVENT_READ, ("out", job))
        if _HAS_PIDFD:
            try:
                job.pidfd = os.pidfd_open(proc.pid)
            except OSError:
                job.pidfd = None
        if job.pidfd is not None:
            self._sel.register(job.pidfd, selectors.EVENT_READ, ("exit", job))
        self._jobs[request.key] = job
        return proc.pid

    def wait(self, timeout: float | None) -> list[tuple[str, Outcome]]:
        end = None if timeout is None else time.monotonic() + timeout
        while not self._done:
            now_m = time.monotonic()
            wait = self._next_timer()
            if end is not None:
                left = max(0.0, end - now_m)
                wait = left if wait is None else min(wait, left)
            if any(j.pidfd is None and j.exit_status is None for j in self._jobs.values()):
                wait = 0.05 if wait is None else min(wait, 0.05)  # no pidfd: poll
            woke = False
            for key, _ in self._sel.select(wait):
                kind, job = key.data
                if kind == "wake":
                    self._wake.drain()
                    woke = True
                elif kind == "out":
                    self._read(job)
                else:
                    self._reap(job)
            self._poll_without_pidfd()
            self._timers()
            if woke or (end is not None and time.monotonic() >= end):
                break
        done, self._done = self._done, []
        return done

    def wake(self) -> None:
        self._wake.wake()

    def cancel_all(self) -> None:
        now = time.time()
        for job in self._jobs.values():
            if job.exit_status is None and not job.interrupted:
                job.interrupted = True
                self._signal(job, signal.SIGTERM)
                job.kill_at = now + job.req.kill_grace

    def running(self) -> int:
        return len(self._jobs)

    def close(self) -> None:
        for job in list(self._jobs.values()):
            self._signal(job, signal.SIGKILL)
            self._finish(job)
        self._sel.close()
        self._wake.close()

    # -- internals ------------------------------------------------------------------

    def _signal(self, job: _Job, sig: int) -> None:
        if job.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(job.proc.pid, sig)  # the step's session leader's pid is its pgid

    def _read(self, job: _Job) -> None:
        if job.pipe is None:
            return  # closed earlier in this batch of events (by _reap draining it)
        try:
            data = os.read(job.pipe, _READ)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close_pipe(job)
            return
        self._emit(job, data)

    def _emit(self, job: _Job, data: bytes) -> None:
        if not self.mask and self.on_output is None:
            self._log(job, data)
            return
        data = job.partial + data
        lines = data.split(b"\n")
        job.partial = lines.pop()
        if len(job.partial) > _READ:  # a line without end: pass it on in pieces
            lines.append(job.partial)
            job.partial = b""
        self._emit_lines(job, lines)

    def _emit_lines(self, job: _Job, lines: list[bytes]) -> None:
        if not lines:
            return
        texts = [ln.decode("utf-8", "replace") for ln in lines]
        if self.mask:
            texts = [self.mask(t) for t in texts]
        self._log(job, ("\n".join(texts) + "\n").encode())
        if self.on_output is not None:
            for t in texts:
                self.on_output(job.req.key, t)

    def _log(self, job: _Job, data: bytes) -> None:
        if job.log is None:
            try:
                job.log = os.open(job.req.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND
                                  | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            except OSError as exc:
                job.log = -1
                why = ("is a symbolic link; flowsh does not follow it (O_NOFOLLOW)"
                       if exc.errno == errno.ELOOP else exc.strerror)
                sys.stderr.write(f"flowsh: warning: cannot write log {job.req.log_path}: "
                                 f"{why}; its output is lost\n")
        if job.log >= 0:
            view = memoryview(data)
            while view:
                view = view[os.write(job.log, view):]

    def _close_pipe(self, job: _Job) -> None:
        if job.pipe is None:
            return
        if job.partial:
            self._emit_lines(job, [job.partial])
            job.partial = b""
        self._sel.unregister(job.pipe)
        assert job.proc is not None and job.proc.stdout is not None
        job.proc.stdout.close()
        job.pipe = None
        if job.exit_status is not None:
            self._finish(job)

    def _reap(self, job: _Job) -> None:
        assert job.proc is not None
        if job.exit_status is not None:
            return  # already reaped in this batch of events
        status = job.proc.poll()
        if status is None:
            return
        job.exit_status = status
        job.exited_at = time.time()
        if job.pidfd is not None:
            self._sel.unregister(job.pidfd)
            os.close(job.pidfd)
            job.pidfd = None
        # Whatever the step left behind in its group goes with it.
        self._signal(job, signal.SIGTERM)
        if job.pipe is None:
            self._finish(job)
        else:
            self._read_available(job)
            if job.pipe is not None:
                # Someone left in the group still holds the pipe: give it the grace period.
                job.kill_at = time.time() + job.req.kill_grace

    def _read_available(self, job: _Job) -> None:
        while job.pipe is not None:
            try:
                data = os.read(job.pipe, _READ)
            except BlockingIOError:
                return
            if not data:
                self._close_pipe(job)
                return
            self._emit(job, data)

    def _poll_without_pidfd(self) -> None:
        for job in list(self._jobs.values()):
            if job.pidfd is None and job.exit_status is None:
                self._reap(job)

    def _next_timer(self) -> float | None:
        times = [t for j in self._jobs.values() for t in (j.deadline, j.kill_at) if t]
        if not times:
            return None
        return max(0.0, min(times) - time.time())

    def _timers(self) -> None:
        now = time.time()
        for job in list(self._jobs.values()):
            if job.deadline is not None and now >= job.deadline and job.exit_status is None:
                job.deadline = None
                job.timed_out = True
                self._signal(job, signal.SIGTERM)
                job.kill_at = now + job.req.kill_grace
            if job.kill_at is not None and now >= job.kill_at:
                job.kill_at = None
                self._signal(job, signal.SIGKILL)
                if job.exit_status is not None and job.pipe is not None:
                    # Main process gone, stragglers killed: stop waiting for the pipe.
                    self._read_available(job)
                    if job.pipe is not None:
                        self._close_pipe(job)

    def _finish(self, job: _Job) -> None:
        if job.req.key not in self._jobs:
            return
        del self._jobs[job.req.key]
        if job.pipe is not None:
            self._close_pipe(job)
        if job.exit_status is None and job.proc is not None:
            job.exit_status = job.proc.wait()
        if job.log is not None and job.log >= 0:
            os.close(job.log)
        status = job.exit_status if job.exit_status is not None else 1
        sig = -status if status < 0 else None
        code = 128 + sig if sig else status
        if job.timed_out:
            code = EXIT_TIMEOUT
        self._done.append((job.req.key, Outcome(
            exit_code=code,
            started_at=job.started,
            ended_at=job.exited_at or time.time(),
            signal=sig,
            timed_out=job.timed_out,
            interrupted=job.interrupted and not job.timed_out,
            extra=job.extra,
        )))


def stop_orphan(pid: int, run_id: str, grace: float) -> bool:
    """Stop the process group `pid` if it is still a step of run `run_id` (its environment
    says FLOWSH_RUN_ID=run_id, so a recycled pid is never touched): TERM, then KILL after
    `grace`. Returns whether there was something to stop."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    if f"FLOWSH_RUN_ID={run_id}".encode() not in environ.split(b"\0"):
        return False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        end = time.monotonic() + grace
        while time.monotonic() < end:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.05)
    return True
