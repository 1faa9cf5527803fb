"""flowsh.executor: StepRequest, Outcome and the WakePipe."""

from __future__ import annotations

import dataclasses
import select
import signal
import threading

import pytest

from flowsh.executor import EXIT_TIMEOUT, Outcome, StepRequest, WakePipe


def test_step_request_defaults_and_frozen() -> None:
    r = StepRequest(key="a", argv=["true"], cwd="/", env={}, log_path="/tmp/a.log")
    assert (r.timeout, r.kill_grace, r.stdin, r.keep_children, r.echo, r.discard_stdout) == (
        None, 5.0, None, False, True, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.key = "b"  # type: ignore[misc]


def test_outcome_ok_and_elapsed() -> None:
    assert Outcome(0, 10.0, 12.5).ok
    assert Outcome(0, 10.0, 12.5).elapsed == 2.5
    assert not Outcome(1, 0, 1).ok
    assert not Outcome(0, 0, 1, timed_out=True).ok
    assert not Outcome(0, 0, 1, interrupted=True).ok


@pytest.mark.parametrize(("outcome", "text"), [
    (Outcome(3, 0, 1), "exit code 3"),
    (Outcome(EXIT_TIMEOUT, 0, 1, timed_out=True), "timed out"),
    (Outcome(130, 0, 1, interrupted=True), "interrupted"),
    (Outcome(137, 0, 1, signal=signal.SIGKILL), "killed by SIGKILL"),
    (Outcome(128 + 99, 0, 1, signal=99), "killed by signal 99"),
    (Outcome(127, 0, 1, error="cannot start 'x': No such file"), "cannot start 'x': No such file"),
])
def test_outcome_describe(outcome: Outcome, text: str) -> None:
    assert outcome.describe() == text


def test_outcome_extra_is_per_instance() -> None:
    a, b = Outcome(0, 0, 0), Outcome(0, 0, 0)
    a.extra["worker"] = "w1"
    assert b.extra == {}


def test_wake_pipe_wakes_a_select_from_another_thread() -> None:
    pipe = WakePipe()
    try:
        assert select.select([pipe.read_fd], [], [], 0)[0] == []
        threading.Timer(0.05, pipe.wake).start()
        assert select.select([pipe.read_fd], [], [], 10)[0] == [pipe.read_fd]
        pipe.drain()
        assert select.select([pipe.read_fd], [], [], 0)[0] == []
    finally:
        pipe.close()


def test_wake_pipe_never_blocks_when_full() -> None:
    pipe = WakePipe()
    try:
        for _ in range(100_000):  # more than a pipe buffer holds
            pipe.wake()
        pipe.drain()
        assert select.select([pipe.read_fd], [], [], 0)[0] == []
    finally:
        pipe.close()
