"""The executor interface: the seam between the engine and wherever a step's process runs.

The engine never forks. It hands an executor a `StepRequest` (argv, cwd, env, timeout,
log file) and collects `Outcome`s from `wait()`. The local executor (flowsh.process) runs
OS processes on this machine; plugins register others (Celery workers...) through
``flowsh_register_executors``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

# Exit code reported for a step killed by its timeout, as timeout(1) does.
EXIT_TIMEOUT = 124


@dataclass(frozen=True)
class StepRequest:
    key: str  # unique among the jobs in flight (the step name)
    argv: list[str]
    cwd: str
    env: dict[str, str]
    log_path: str
    timeout: float | None = None
    kill_grace: float = 5.0
    stdin: str | None = None  # a file to read stdin from; /dev/null otherwise
    keep_children: bool = False  # a normal exit does not stop what the step left running
    echo: bool = True  # pass output lines to on_output (an `if:` test's are only logged)
    discard_stdout: bool = False  # stdout to /dev/null, only stderr logged (an `if:` test)
    # Where a remote executor sends the step (`queue:`), and how long the step may wait
    # there for a worker (`queue_timeout:`); the local executor starts steps at once.
    queue: str | None = None
    queue_timeout: float | None = None
    run_id: str = ""  # the run the step belongs to (a remote worker checks it is live)


@dataclass
class Placement:
    """Where and when an attempt runs, for executors that send steps elsewhere: recorded
    in the step's record as soon as known (submitted, then started by a worker)."""

    task_id: str
    queue: str | None = None
    queued_at: float | None = None
    worker: str | None = None
    started_at: float | None = None  # when the worker started it (run time counts from here)


@dataclass
class Outcome:
    exit_code: int  # 124 on timeout, 128+N when killed by signal N
    started_at: float
    ended_at: float
    signal: int | None = None
    timed_out: bool = False
    interrupted: bool = False
    error: str | None = None  # the process could not start (no such file, permission...)
    extra: dict[str, str] = field(default_factory=dict)
    placement: Placement | None = None  # a remote attempt: where it ran
    # What the step wrote to $FLOWSH_OUTPUT, when the executor brings it back itself (a
    # remote step's file is on another host); None: the engine reads the local file.
    outputs: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.interrupted

    @property
    def elapsed(self) -> float:
        return self.ended_at - self.started_at

    def describe(self) -> str:
        if self.error:
            return self.error
        if self.timed_out:
            return "timed out"
        if self.interrupted:
            return "interrupted"
        if self.signal:
            import signal as _signal

            try:
                name = _signal.Signals(self.signal).name
            except ValueError:
                name = f"signal {self.signal}"
            return f"killed by {name}"
        return f"exit code {self.exit_code}"


class WakePipe:
    """The self-pipe an executor's `wait` selects on, so `wake()` — safe in a signal
    handler — makes it return at once (Ctrl-C must not wait for a poll interval)."""

    def __init__(self) -> None:
        self.read_fd, self._write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self._write_fd, False)

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # full: a wake-up is already pending
            os.write(self._write_fd, b"x")

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.read_fd, 512):
                pass

    def close(self) -> None:
        os.close(self.read_fd)
        os.close(self._write_fd)


# Called with (key, one line of output without its newline, already masked).
OutputCallback = Callable[[str, str], None]


class Executor(Protocol):
    """Runs steps; all methods are called from the engine's thread."""

    def start(self, request: StepRequest) -> int | None:
        """Start a job; return the pid of its process group when it runs on this host
        (recorded, so a resume after a crash can stop what the dead runner left running).
        Failures to start are reported as an Outcome from `wait`."""

    def wait(self, timeout: float | None) -> list[tuple[str, Outcome]]:
        """Block up to `timeout` seconds (None: until something happens); return finished
        jobs as (key, outcome). Returns early, possibly empty, when `wake()` is called."""

    def wake(self) -> None:
        """Make a blocked `wait` return soon; safe to call from a signal handler."""

    def cancel_all(self) -> None:
        """Stop every running job: TERM its process group, then KILL after the grace period.
        Their outcomes arrive from `wait` with ``interrupted=True``."""

    def running(self) -> int: ...

    def close(self) -> None: ...


class RemoteExecutor(Executor, Protocol):
    """An executor whose steps run on other hosts. The engine records each attempt's
    `Placement` and, when resuming a crashed run, asks it to stop what that run left."""

    def placements(self) -> dict[str, Placement]:
        """Placements that changed since the last call, by job key (after `start`, and
        when a worker starts the job; `wait` returns early when one changes)."""

    def stop_remote(self, run_id: str, keys: list[str], kill_grace: float) -> list[str]:
        """Make sure no attempt of these jobs of run `run_id`, submitted by a runner that
        is gone, runs or will run: stop the running ones and return once each is confirmed
        stopped; return one warning line per attempt stopped."""
