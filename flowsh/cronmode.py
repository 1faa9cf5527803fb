"""Cron's conventions for `flowsh run`: chronic's rule, a kept log, a silent lock skip.

cron mails whatever a job prints (``MAILTO``), so a job that talks on success trains its
owner to ignore the mail. Under ``--quiet-on-success`` the run's whole transcript (flowsh's
progress lines and every step's output, in order) goes to a temporary file; it is printed
on stdout only when the run did not succeed — chronic's rule. ``--log FILE`` appends the
transcript after a header line on every run, success or not, so the full log is kept.

A run skipped because another one holds the workflow's lock (overlap ``skip``, exit 75) is
not a failure cron should mail about: under ``--skip-quietly`` (implied by
``--quiet-on-success``) it prints nothing and still exits 75; the log gets one line.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from flowsh.errors import EXIT_LOCKED, FlowshError, LockHeldError, StateError
from flowsh.monitorfiles import make_parent
from flowsh.state import SUCCEEDED

if TYPE_CHECKING:
    from flowsh.engine import Reporter
    from flowsh.state import RunRecord


def open_log(path: Path) -> IO[bytes]:
    """FILE for appending (0600: step output may hold private data), parents created.

    A symbolic link at FILE is refused, not followed (O_NOFOLLOW): the log may sit in a
    shared directory, where a link would let another user point the transcript (and its
    secrets' surroundings) at a file of their choosing, or make flowsh append to one of ours.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
    try:
        # Under $FLOWSH_HOME (`schedule add` puts it in cron/) no directory on the way may be
        # a link either (docs/state.md).
        make_parent(path)
        # O_NONBLOCK: a FIFO at FILE would otherwise hang the job until someone reads it.
        fd = os.open(path, flags | os.O_NONBLOCK, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP and exc.strerror and "flowsh" in exc.strerror:
            raise StateError(f"--log {path}: {exc.strerror}") from None  # a linked directory
        if exc.errno == errno.ELOOP:
            raise StateError(f"--log {path}: is a symbolic link; give the file itself") from None
        if exc.errno == errno.ENXIO:
            raise StateError(f"--log {path}: is a pipe; give a regular file") from None
        raise StateError(f"--log {path}: {exc.strerror}") from None
    if stat.S_ISFIFO(os.fstat(fd).st_mode) or stat.S_ISSOCK(os.fstat(fd).st_mode):
        os.close(fd)
        raise StateError(f"--log {path}: is a pipe; give a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "ab")


class _Stderr:
    """sys.stderr during a run: warnings (flowsh's own, plugins') join the transcript, in
    order, instead of reaching cron (and its mail) on a run that succeeded."""

    def __init__(self, buffer: Spool, real: IO[str] | None) -> None:
        self.buffer, self.real = buffer, real

    def write(self, text: str) -> int:
        self.buffer.write(text)
        if self.real is not None:
            self.real.write(text)
        return len(text)

    def flush(self) -> None:
        self.buffer.flush()
        if self.real is not None:
            self.real.flush()

    def isatty(self) -> bool:
        return False


class Spool:
    """The run's transcript, on disk in an unnamed temporary file (not memory: a chatty run
    may print gigabytes; unnamed: nothing is left behind by a kill -9, nobody else can
    open it). A spool that cannot be written (TMPDIR full, a small tmpfs) stops keeping
    the transcript and says so at its end — it never stops the run it reports on."""

    def __init__(self) -> None:
        self.problem: str | None = None
        self._pending = bytearray()
        self._file: IO[bytes] | None = None
        import tempfile  # only with --log or --quiet-on-success: ~1 ms of every start

        try:
            self._file = tempfile.TemporaryFile(buffering=0)  # noqa: SIM115
        except OSError as exc:
            self.problem = exc.strerror or str(exc)

    def write(self, text: str) -> int:
        if self.problem is None:
            self._pending += text.encode("utf-8", "replace")
            if len(self._pending) >= 1 << 16:
                self._drain()
        return len(text)

    def flush(self) -> None:
        """Nothing: the transcript is read only at the end (a write per line would cost
        a system call per line of step output)."""

    def isatty(self) -> bool:
        return False

    def _drain(self) -> None:
        view = memoryview(bytes(self._pending))
        self._pending.clear()
        try:
            assert self._file is not None
            while view:
                view = view[self._file.write(view) or 0:]
        except OSError as exc:
            self.problem = exc.strerror or str(exc)

    def copy_to(self, out: IO[bytes]) -> None:
        if self.problem is None:
            self._drain()
        last = b"\n"
        if self._file is not None:
            self._file.seek(0)
            while chunk := self._file.read(1 << 16):
                out.write(chunk)
                last = chunk[-1:]
        if self.problem is not None:
            if last != b"\n":
                out.write(b"\n")  # the spool stopped mid-line
            import tempfile

            out.write(f"flowsh: warning: the transcript stops here: cannot keep it in "
                      f"{tempfile.gettempdir()} ({self.problem}); each step's whole output "
                      f"is in its own log (flowsh logs RUN_ID)\n".encode())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def log_refusal(log: Path, file: Path, message: str) -> None:
    """One header line in --log for a run that did not start (exit 2, 3, 4): what cron
    mails is gone by morning, the log is where the admin looks. Best effort: a log that
    cannot be written adds a warning, never hides the refusal itself."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %z")
    line = f"=== {stamp} {file}: not run: {message} ===\n".encode()
    try:
        with open_log(log) as out:
            fcntl.flock(out.fileno(), fcntl.LOCK_EX)
            out.write(line)
    except (OSError, StateError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) else str(exc)
        sys.stderr.write(f"flowsh: warning: --log {log}: {detail}\n")


@dataclass
class CronOutput:
    quiet_on_success: bool = False
    skip_quietly: bool = False
    log: Path | None = None
    _buffer: Spool | None = field(default=None, init=False)

    @property
    def active(self) -> bool:
        return self.quiet_on_success or self.log is not None

    def check_log(self) -> None:
        """Open --log FILE once now: one that cannot be written is refused before the run.
        (It is opened again at the end: logrotate may have moved it meanwhile.)"""
        if self.log is not None:
            open_log(self.log).close()

    def reporter(self) -> Reporter:
        """Plain lines into the transcript (and, without --quiet-on-success, on screen)."""
        from flowsh.ui import PlainReporter

        self._buffer = Spool()  # closed in finish()
        if self.quiet_on_success:
            return PlainReporter(out=self._buffer, err=self._buffer)  # type: ignore[arg-type]
        return _tee(self._buffer)

    def _header(self, workflow: str, what: str) -> bytes:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S %z")
        return f"=== {stamp} {workflow}: {what} ===\n".encode()

    def _append(self, *parts: bytes | Spool) -> None:
        """Append to --log (a text part is the transcript, copied in chunks). A failure
        (disk full) is a warning naming the file, never the end of the run's own report."""
        assert self.log is not None
        try:
            with open_log(self.log) as out:
                # One run's header and transcript in one piece: a run finishing at the
                # same time (overlap: allow, a shared log, a skip's line) waits its turn
                # instead of landing inside this transcript's 64 kB chunks.
                fcntl.flock(out.fileno(), fcntl.LOCK_EX)
                for part in parts:
                    if isinstance(part, bytes):
                        out.write(part)
                    else:
                        part.copy_to(out)
        except (OSError, StateError) as exc:
            detail = exc.strerror if isinstance(exc, OSError) else str(exc)
            sys.stderr.write(f"flowsh: warning: {detail}\n" if isinstance(exc, StateError)
                             else f"flowsh: warning: --log {self.log}: {detail}\n")

    @contextmanager
    def lock_guard(self, workflow: str) -> Iterator[None]:
        """A lock skip: silent exit 75 under --skip-quietly/--quiet-on-success; any other
        flowsh error during the run still shows the transcript so far."""
        real = sys.stderr
        if self._buffer is not None:
            sys.stderr = _Stderr(self._buffer, None if self.quiet_on_success else real)  # type: ignore[assignment]
        try:
            yield
        except LockHeldError as exc:
            sys.stderr = real
            if self.log is not None:
                self._append(self._header(workflow, f"skipped: {exc}"))
            if self.skip_quietly or self.quiet_on_success:
                raise SystemExit(EXIT_LOCKED) from None
            raise
        except FlowshError:
            sys.stderr = real
            # The run stopped on an error of its own (the state store, a plugin): what it
            # printed so far is part of the failure cron should mail.
            if self.quiet_on_success and self._buffer is not None:
                sys.stdout.flush()
                self._buffer.copy_to(sys.stdout.buffer)
                sys.stdout.buffer.flush()
            raise
        finally:
            sys.stderr = real

    def nothing_to_do(self, workflow: str, line: str, *, err: bool = False,
                      quiet: bool = False) -> None:
        """No run at all (SLOT-8): one line, kept in --log, not printed under --quiet or
        --quiet-on-success (a success cron should not mail about); on stderr beside --json."""
        if self.log is not None:
            self._append(self._header(workflow, line))
        if self._buffer is not None:
            self._buffer.close()
        if not (self.quiet_on_success or quiet):
            (sys.stderr if err else sys.stdout).write(line + "\n")

    def finish(self, run: RunRecord) -> None:
        """Keep the transcript in --log; print it when the run failed (chronic)."""
        if self._buffer is None:
            return
        if self.log is not None:
            self._append(self._header(run.workflow, f"run {run.run_id} {run.status}"),
                         self._buffer)
        if self.quiet_on_success and run.status != SUCCEEDED:
            sys.stdout.flush()
            self._buffer.copy_to(sys.stdout.buffer)
            sys.stdout.buffer.flush()
        self._buffer.close()


def _tee(buffer: Spool) -> Reporter:
    """Plain lines on screen and in the transcript (`--log` without --quiet-on-success)."""
    from flowsh.ui import PlainReporter

    class Both:
        def __init__(self, *streams: IO[str]) -> None:
            self.streams = streams

        def write(self, text: str) -> int:
            for s in self.streams:
                s.write(text)
            return len(text)

        def flush(self) -> None:
            for s in self.streams:
                s.flush()

        def isatty(self) -> bool:
            return False

    return PlainReporter(out=Both(sys.stdout, buffer),  # type: ignore[arg-type]
                         err=Both(sys.stderr, buffer))  # type: ignore[arg-type]
