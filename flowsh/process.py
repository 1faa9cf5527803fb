"""Steps as local OS processes: the built-in executor.

One selector loop, no threads: each step's combined stdout/stderr pipe and a pidfd (the
kernel's "this process exited" handle) are watched together, so output streams live,
exits are seen at once, and timeouts are enforced from the same loop. Every step runs in
its own session and process group; a timeout or Ctrl-C signals the whole group (TERM,
then KILL after the grace period), and whatever a step leaves running when its main process
exits is stopped the same way, so no grandchild outlives its step.

A process group is not enough: `setsid` and double-forked daemons leave it. So each step's
processes carry a token in their environment (FLOWSH_STEP_TOKEN, inherited by everything
they start), and stopping a step signals every process whose /proc/PID/environ holds it,
wherever it went. The runner is a child subreaper (prctl PR_SET_CHILD_SUBREAPER), so such
orphans are re-parented to flowsh rather than to init, and flowsh reaps the ones it kills.
What this cannot catch: a descendant that clears its environment (`env -i`) *and* leaves
the step's process group; one running as another user (/proc/PID/environ unreadable).
A step with ``keep_children: true`` is not swept when it exits normally (a daemon it
starts must redirect its output: flowsh stops reading the step's pipe when it exits).

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from flowsh.errors import OptionError
from flowsh.executor import EXIT_TIMEOUT, Outcome, OutputCallback, StepRequest, WakePipe
from flowsh.survivors import (
    TOKEN_VAR,
    become_subreaper,
    children,
    signal_marked,
    zombie,
)

_READ = 65536
_HAS_PIDFD = hasattr(os, "pidfd_open")


def _which(name: str, path: str) -> str | None:
    """shutil.which's answer for a PATH of absolute directories. Not shutil itself: it
    imports zlib, bz2 and lzma to learn which archives it could make (~1 ms of every
    start, before the first step)."""
    for directory in path.split(os.pathsep):
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return None


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
    token: str = ""


class LocalExecutor:
    """Runs each step as a process group on this machine."""

    @staticmethod
    def check_options(options: Mapping[str, object]) -> None:
        if options:
            got = ", ".join(options)
            raise OptionError(f"executor 'local' takes no executor_options (got {got})",
                              key=next(iter(options)))

    def __init__(
        self,
        on_output: OutputCallback | None = None,
        mask: Callable[[str], str] | None = None,
        **options: object,
    ) -> None:
        self.check_options(options)
        self.on_output = on_output
        self.mask = mask
        self._sel = selectors.DefaultSelector()
        self._jobs: dict[str, _Job] = {}
        self._done: list[tuple[str, Outcome]] = []
        self._wake = WakePipe()
        self._sel.register(self._wake.read_fd, selectors.EVENT_READ, ("wake", None))
        # Steps whose main process is gone but whose tagged leftovers got TERM: (token,
        # pgid, when to KILL). And pids flowsh killed that may be its (adopted) children.
        self._stragglers: list[tuple[str, int, float]] = []
        self._victims: set[int] = set()
        self._subreaper = become_subreaper()
        self._programs: dict[tuple[str, str], str] = {}  # (name, PATH) -> absolute path

    # -- interface ------------------------------------------------------------------

    def start(self, request: StepRequest) -> int | None:
        now = time.time()
        stdin: int | None = subprocess.DEVNULL
        stdin_fd: int | None = None
        if request.stdin is not None:
            stdin_fd = os.open(request.stdin, os.O_RDONLY)
            stdin = stdin_fd
        token = os.urandom(8).hex()
        try:
            proc = subprocess.Popen(
                request.argv,
                executable=self._program(request.argv[0], request.env.get("PATH")),
                cwd=request.cwd,
                env={**request.env, TOKEN_VAR: token},
                stdin=stdin,
                stdout=subprocess.DEVNULL if request.discard_stdout else subprocess.PIPE,
                stderr=subprocess.PIPE if request.discard_stdout else subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            end = time.time()
            reason = f"cannot start {request.argv[0]!r}: {exc.strerror}"
            if not os.path.isdir(request.cwd):  # Popen blames the program, not the cwd
                reason = f"workdir {request.cwd} does not exist"
            code = 126 if exc.errno in (errno.EACCES, errno.ENOEXEC) else 127
            self._done.append((request.key, Outcome(
                exit_code=code, started_at=now, ended_at=end, error=reason)))
            return None
        except ValueError:  # a NUL byte: no C string, so no argv or environment, holds one
            self._done.append((request.key, Outcome(
                exit_code=126, started_at=now, ended_at=time.time(),
                error=f"cannot start {request.argv[0]!r}: a NUL byte in its arguments or "
                      "environment")))
            return None
        finally:
            if stdin_fd is not None:
                os.close(stdin_fd)
        job = _Job(req=request, proc=proc, started=now, token=token)
        if request.timeout:
            job.deadline = now + request.timeout
        stream = proc.stderr if request.discard_stdout else proc.stdout
        assert stream is not None
        job.pipe = stream.fileno()
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

    def _program(self, name: str, path: str | None) -> str | None:
        """Where `name` is on the step's PATH, looked up once per run rather than by Popen
        at every step (a join per PATH entry in flowsh, a failed execve per entry before
        bash's in the child). None leaves the search to Popen: a name with a slash, one
        not found (its error is Popen's own), a PATH with a relative entry (the step's cwd
        decides), and a file gone since (looked up again)."""
        if "/" in name or not path:
            return None
        found = self._programs.get((name, path))
        if found is None or not os.access(found, os.X_OK):
            if not all(os.path.isabs(d) for d in path.split(os.pathsep)):
                return None
            found = _which(name, path)
            if found is None:
                return None
            self._programs[(name, path)] = found
        return found

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
                self._stop(job, signal.SIGTERM)
                job.kill_at = now + job.req.kill_grace

    def running(self) -> int:
        return len(self._jobs)

    def close(self) -> None:
        for job in list(self._jobs.values()):
            self._kill(job.token, job.proc.pid if job.proc else None)
            self._finish(job)
        for token, pgid, at in self._stragglers:
            # Had their TERM: the rest of their grace period to end on it (PROC-1), as
            # they would have had if the run went on; then the KILL.
            while time.time() < at and self._signal_all(token, pgid, 0):
                self._reap_victims()
                time.sleep(0.05)
            self._kill(token, pgid)
        self._stragglers.clear()
        self._reap_victims()
        if self._subreaper:
            # Only for the run: a process embedding flowsh (a test runner, a service) must
            # not go on adopting, and never reaping, unrelated orphans.
            become_subreaper(False)
        self._sel.close()
        self._wake.close()

    # -- internals ------------------------------------------------------------------

    def _main_pids(self) -> set[int]:
        return {j.proc.pid for j in self._jobs.values() if j.proc is not None}

    def _signal_all(self, token: str, pgid: int | None, sig: int) -> list[int]:
        """Signal the step's process group and every process carrying its token (setsid'd
        and double-forked ones included); return the tagged pids found."""
        # The step's session leader's pid is its pgid.
        if not token:
            if pgid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, sig)
            return []
        pids = signal_marked(pgid, TOKEN_VAR, token, sig)
        mains = self._main_pids()
        # Popen reaps its own; an adopted orphan is ours to reap.
        self._victims.update(pid for pid in pids if pid not in mains)
        return pids

    def _may_have_leftovers(self, job: _Job) -> bool:
        """Whether a step whose main process was just reaped may have left something
        running. Saves the /proc scan for the usual step (a chain of 2,000 steps would pay
        it 2,000 times; a fan-out at -j8 paid it at every end, 5-10 ms of the loop's time
        each): as a subreaper, the top of anything a step leaves behind is either in its
        process group or re-parented to flowsh, so no group and no child of flowsh but the
        main processes of steps still running means nothing is left."""
        assert job.proc is not None
        try:
            os.killpg(job.proc.pid, 0)
            return True
        except ProcessLookupError:
            pass
        except PermissionError:
            return True
        if not self._subreaper:
            return True
        others = {j.proc.pid for j in self._jobs.values()
                  if j is not job and j.proc is not None and j.exit_status is None}
        if others:
            kids = children()
            # Anything else alive (another step's straggler, a plugin's command) gets the
            # scan; a dead child (a daemon some step left, ended since) holds nothing.
            return kids is None or any(not zombie(p) for p in kids - others)
        try:
            os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return False  # no child at all
        return True

    def _stop(self, job: _Job, sig: int) -> list[int]:
        return self._signal_all(job.token, job.proc.pid if job.proc else None, sig)

    def _kill(self, token: str, pgid: int | None) -> None:
        """SIGKILL until nothing carrying the token is left (one may fork meanwhile)."""
        for _ in range(20):
            if not self._signal_all(token, pgid, signal.SIGKILL):
                break
            time.sleep(0.01)
        self._reap_victims()

    def _reap_victims(self) -> None:
        for pid in list(self._victims):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid  # not (or no longer) our child: its parent reaps it
            if done:
                self._victims.discard(pid)

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
        if not self.mask and (self.on_output is None or not job.req.echo):
            self._log(job, data)
            return
        data = job.partial + data
        lines = data.split(b"\n")
        job.partial = lines.pop()
        self._emit_lines(job, lines)
        if len(job.partial) > _READ:  # a line without end: pass it on in pieces
            self._emit_piece(job)

    def _emit_piece(self, job: _Job) -> None:
        """The head of a line still growing, as written (no newline added); a secret the
        cut would split, or whose end may be still to come, stays behind whole."""
        text = job.partial.decode("utf-8", "surrogateescape")
        where = getattr(self.mask, "cut", None)  # a Masker knows its values; a bare callable not
        cut = where(text) if where is not None else len(text)
        # An incomplete UTF-8 character at the end waits for its other bytes.
        while cut > len(text) - 3 and cut > 0 and "\udc80" <= text[cut - 1] <= "\udcff":
            cut -= 1
        if cut == 0:
            return
        job.partial = text[cut:].encode("utf-8", "surrogateescape")
        shown = text[:cut].encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        if self.mask:
            shown = self.mask(shown)
        self._log(job, shown.encode())
        if self.on_output is not None and job.req.echo:
            self.on_output(job.req.key, shown)

    def _emit_lines(self, job: _Job, lines: list[bytes]) -> None:
        if not lines:
            return
        texts = [ln.decode("utf-8", "replace") for ln in lines]
        if self.mask:
            texts = [self.mask(t) for t in texts]
        self._log(job, ("\n".join(texts) + "\n").encode())
        if self.on_output is not None and job.req.echo:
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
            try:
                while view:
                    view = view[os.write(job.log, view):]
            except OSError as exc:
                # A full disk (or a vanished mount) must not end the run: the step goes on
                # and only its log stops, as with `flowsh wrap --log` (rt11 #8).
                os.close(job.log)
                job.log = -1
                sys.stderr.write(f"flowsh: warning: cannot write log {job.req.log_path}: "
                                 f"{exc.strerror}; the step goes on, its output from here "
                                 "on is lost\n")

    def _close_pipe(self, job: _Job) -> None:
        if job.pipe is None:
            return
        if job.partial:
            self._emit_lines(job, [job.partial])
            job.partial = b""
        self._sel.unregister(job.pipe)
        assert job.proc is not None
        stream = job.proc.stderr if job.req.discard_stdout else job.proc.stdout
        assert stream is not None
        stream.close()
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
        if job.req.keep_children and not (job.timed_out or job.interrupted):
            # Its daemons stay; flowsh does not wait for the pipe they may hold.
            self._read_available(job)
            self._finish(job)
            return
        # Whatever the step left behind (in its group or not) goes with it. A step timed
        # out or interrupted had its TERM, each of its processes once (TIME-1): what is
        # left gets the KILL when its grace period (from that TERM) ends.
        termed = job.timed_out or job.interrupted
        kill_at = job.kill_at if termed and job.kill_at else time.time() + job.req.kill_grace
        left = []
        if self._may_have_leftovers(job):
            sig = 0 if termed else signal.SIGTERM  # 0: only found, not signalled
            left = [p for p in self._stop(job, sig) if p != job.proc.pid]
        if job.pipe is None:
            if left:
                self._stragglers.append((job.token, job.proc.pid, kill_at))
            self._finish(job)
        else:
            self._read_available(job)
            if job.pipe is not None:
                # Someone left still holds the pipe: give it the grace period.
                job.kill_at = kill_at
            elif left:
                self._stragglers.append((job.token, job.proc.pid, kill_at))

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
        times += [t for _, _, t in self._stragglers]
        if not times:
            return None
        return max(0.0, min(times) - time.time())

    def _timers(self) -> None:
        now = time.time()
        if self._stragglers:
            due = [s for s in self._stragglers if s[2] <= now]
            self._stragglers = [s for s in self._stragglers if s[2] > now]
            for token, pgid, _ in due:
                self._kill(token, pgid)
        if self._victims:
            self._reap_victims()
        for job in list(self._jobs.values()):
            if job.deadline is not None and now >= job.deadline and job.exit_status is None:
                job.deadline = None
                job.timed_out = True
                self._stop(job, signal.SIGTERM)
                job.kill_at = now + job.req.kill_grace
            if job.kill_at is not None and now >= job.kill_at:
                job.kill_at = None
                self._kill(job.token, job.proc.pid if job.proc else None)
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
