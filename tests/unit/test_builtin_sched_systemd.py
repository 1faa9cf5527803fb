"""flowsh.builtin.sched_systemd: user units written under XDG_CONFIG_HOME, and the
systemctl calls made, through a fake `systemctl` (FLOWSH_SYSTEMCTL) that records them."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from flowsh import plugins
from flowsh.builtin.sched_systemd import SystemdScheduler, unit_dir
from flowsh.errors import NotFoundError, StateError
from flowsh.loader import load_workflow

FLOW = "name: nightly\nschedule: '0 2 * * *'\nsteps:\n  - {name: a, run: 'true'}\n"


@pytest.fixture
def calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "calls"
    fake = tmp_path / "fake-systemctl"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {log}\n[ "$3" != "--fail" ]\n')
    fake.chmod(0o755)
    monkeypatch.setenv("FLOWSH_SYSTEMCTL", str(fake))
    return log


def test_registered() -> None:
    assert plugins.registry("schedulers")["systemd"] is SystemdScheduler


def test_unit_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert unit_dir() == tmp_path / "cfg" / "systemd" / "user"


def test_add_list_remove(calls: Path, write_flow: Callable[..., Path]) -> None:
    wf = load_workflow(write_flow(FLOW))
    s = SystemdScheduler()
    assert s.add(wf) is True
    d = unit_dir()
    assert sorted(os.listdir(d)) == ["flowsh-nightly.service", "flowsh-nightly.timer"]
    assert all((d / f).stat().st_mode & 0o777 == 0o600 for f in os.listdir(d))
    assert calls.read_text().splitlines() == ["--user daemon-reload",
                                              "--user enable --now flowsh-nightly.timer"]
    assert s.add(wf) is False  # unchanged: no daemon-reload, timer enabled again
    assert calls.read_text().splitlines()[-1] == "--user enable --now flowsh-nightly.timer"
    (entry,) = s.list()
    assert entry.name == "nightly" and entry.source == wf.path and "--resume" in entry.command
    assert entry.exprs and "0 2 * * *" in entry.exprs[0]
    s.remove("nightly")
    assert os.listdir(d) == []
    assert calls.read_text().splitlines()[-2:] == ["--user disable --now flowsh-nightly.timer",
                                                   "--user daemon-reload"]
    with pytest.raises(NotFoundError):
        s.remove("nightly")


def test_units_not_ours_are_left_alone(calls: Path) -> None:
    d = unit_dir()
    d.mkdir(parents=True)
    (d / "flowsh-handmade.timer").write_text("[Timer]\nOnCalendar=daily\n")
    assert SystemdScheduler().list() == []
    with pytest.raises(NotFoundError):
        SystemdScheduler().remove("handmade")
    assert (d / "flowsh-handmade.timer").exists()


def test_systemctl_failure_is_a_state_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            write_flow: Callable[..., Path]) -> None:
    fake = tmp_path / "failing"
    fake.write_text("#!/bin/sh\necho 'Failed to connect to bus' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("FLOWSH_SYSTEMCTL", str(fake))
    with pytest.raises(StateError, match="Failed to connect to bus"):
        SystemdScheduler().add(load_workflow(write_flow(FLOW)))
