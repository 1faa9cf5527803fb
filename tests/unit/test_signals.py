"""flowsh.signals: real signals sent to this process turn into a flag and a wake-up."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from flowsh.signals import RunSignals, interruptible


class Waker:
    def __init__(self) -> None:
        self.woken = 0

    def wake(self) -> None:
        self.woken += 1


def test_term_becomes_a_flag_and_a_wake_up() -> None:
    before = signal.getsignal(signal.SIGTERM)
    w = Waker()
    with RunSignals(w) as sigs:  # type: ignore[arg-type]
        assert sigs.signum is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert sigs.signum == signal.SIGTERM and w.woken == 1
        os.kill(os.getpid(), signal.SIGHUP)
        assert sigs.signum == signal.SIGHUP and w.woken == 2
    assert signal.getsignal(signal.SIGTERM) is before  # handlers put back


def test_a_second_ctrl_c_stops_waiting() -> None:
    w = Waker()
    with RunSignals(w) as sigs:  # type: ignore[arg-type]
        os.kill(os.getpid(), signal.SIGINT)
        assert sigs.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)


def test_outside_the_main_thread_nothing_is_installed() -> None:
    got: list[object] = []

    def run() -> None:
        with RunSignals(Waker()) as sigs:  # type: ignore[arg-type]
            got.append(sigs.signum)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert got == [None]


def test_interruptible_turns_term_into_keyboard_interrupt() -> None:
    before = signal.getsignal(signal.SIGHUP)
    with pytest.raises(KeyboardInterrupt), interruptible():
        os.kill(os.getpid(), signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), interruptible():
        os.kill(os.getpid(), signal.SIGHUP)
    assert signal.getsignal(signal.SIGHUP) is before
