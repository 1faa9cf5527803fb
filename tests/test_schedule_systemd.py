"""The systemd scheduler and `--systemd` export.

No systemd runs here (no user bus), so the scheduler's systemctl calls go to a recording
script named by FLOWSH_SYSTEMCTL; the units' content is checked as text, and every
OnCalendar= value is checked against `systemd-analyze calendar` (which needs no running
systemd) fire time by fire time, compared with croniter's reading of the cron expression.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from flowsh.builtin.sched_systemd import SystemdScheduler, unit_dir
from flowsh.cron import next_times, parse
from flowsh.errors import NotFoundError, UsageError
from flowsh.export import on_calendar
from flowsh.loader import load_workflow

FLOW = """\
name: nightly
schedule: ["0 2 * * *", "*/20 9-17 * * mon-fri"]
steps:
  - {name: a, run: 'true'}
"""


@pytest.fixture
def systemctl_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "systemctl.log"
    rec = tmp_path / "systemctl"
    rec.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    rec.chmod(0o755)
    monkeypatch.setenv("FLOWSH_SYSTEMCTL", str(rec))
    return log


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    p = tmp_path / "nightly.yaml"
    p.write_text(FLOW)
    return p


def test_add_list_remove(flow: Path, systemctl_log: Path) -> None:
    sched = SystemdScheduler()
    assert sched.add(load_workflow(flow)) is True
    d = unit_dir()
    assert d == Path(os.environ["XDG_CONFIG_HOME"]) / "systemd" / "user"
    service = (d / "flowsh-nightly.service").read_text()
    timer = (d / "flowsh-nightly.timer").read_text()
    assert (d / "flowsh-nightly.timer").stat().st_mode & 0o777 == 0o600
    assert "ExecStart=" in service and f" run {flow} --resume --scheduled --quiet\n" in service
    assert f"WorkingDirectory={flow.parent}\n" in service
    assert f"Environment=FLOWSH_HOME={os.environ['FLOWSH_HOME']}\n" in service
    assert "SuccessExitStatus=75" in service and "Type=oneshot" in service
    # A stop signals flowsh alone, which stops each step with one TERM (systemd's default
    # signalled every process of the unit as well: a step trapping TERM ran its trap twice).
    assert "\nKillMode=mixed\n" in service
    assert "OnCalendar=*-*-* 02:00:00\n" in timer
    assert "OnCalendar=Mon,Tue,Wed,Thu,Fri *-*-* 09,10,11,12,13,14,15,16,17:00,20,40:00\n" in timer
    assert "Persistent=true" in timer and "Unit=flowsh-nightly.service" in timer
    assert systemctl_log.read_text().splitlines() == [
        "--user daemon-reload", "--user enable --now flowsh-nightly.timer"]

    assert sched.add(load_workflow(flow)) is False  # unchanged: no reload
    assert systemctl_log.read_text().splitlines()[-1] == "--user enable --now flowsh-nightly.timer"
    [entry] = sched.list()
    assert entry.name == "nightly" and entry.exprs == ["0 2 * * *", "*/20 9-17 * * mon-fri"]

    # A unit of the user's own, without flowsh's marker, is never listed nor removed.
    (d / "flowsh-mine.timer").write_text("[Timer]\nOnCalendar=daily\n")
    assert [e.name for e in sched.list()] == ["nightly"]
    with pytest.raises(NotFoundError):
        sched.remove("mine")
    assert (d / "flowsh-mine.timer").exists()

    sched.remove("nightly")
    assert not (d / "flowsh-nightly.timer").exists() and not (d / "flowsh-nightly.service").exists()
    assert systemctl_log.read_text().splitlines()[-2:] == [
        "--user disable --now flowsh-nightly.timer", "--user daemon-reload"]


def test_cli_export_systemd(flow: Path, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "units"
    out.mkdir()
    r = cli("export", str(flow), "--systemd", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["flowsh-nightly.service",
                                                      "flowsh-nightly.timer"]
    r = cli("export", str(flow), "--systemd", "-o", str(flow))
    assert r.returncode == 2 and "must be a directory" in r.stderr


def test_unit_of_an_exported_script_keeps_systemds_kill_mode(
        flow: Path, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    """flock(1) runs the script and passes no signal on: with KillMode=mixed the script
    would get no TERM, only the KILL; systemd's default signals it (and its steps)."""
    script = tmp_path / "nightly.sh"
    script.write_text("#!/bin/sh\n")
    out = tmp_path / "units"
    out.mkdir()
    r = cli("export", str(flow), "--systemd", "--script", str(script), "-o", str(out))
    assert r.returncode == 0, r.stderr
    service = (out / "flowsh-nightly.service").read_text()
    assert "ExecStart=flock " in service and "KillMode" not in service


def test_cli_schedule_systemd(flow: Path, systemctl_log: Path, cli) -> None:  # type: ignore[no-untyped-def]
    env = {"FLOWSH_SYSTEMCTL": os.environ["FLOWSH_SYSTEMCTL"]}
    r = cli("schedule", "add", str(flow), "--scheduler", "systemd", env=env)
    assert r.returncode == 0, r.stderr
    r = cli("schedule", "list", "-s", "systemd", env=env)
    assert r.stdout.startswith("nightly\t0 2 * * * | */20 9-17 * * mon-fri\t")
    r = cli("schedule", "remove", "nightly", "-s", "systemd", env=env)
    assert r.returncode == 0
    assert "--user disable --now flowsh-nightly.timer" in systemctl_log.read_text()


def test_systemctl_failure_is_one_line(flow: Path, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad-systemctl"
    bad.write_text("#!/bin/sh\necho 'Failed to connect to bus: No medium found' >&2\nexit 1\n")
    bad.chmod(0o755)
    r = cli("schedule", "add", str(flow), "-s", "systemd", env={"FLOWSH_SYSTEMCTL": str(bad)})
    assert r.returncode == 3
    assert r.stderr.strip().endswith("Failed to connect to bus: No medium found")
    assert "Traceback" not in r.stderr


CASES = [
    "0 2 * * *",
    "*/15 * * * *",
    "*/20 9-17 * * mon-fri",
    "30 4 1,15 * 5",  # day-of-month OR day-of-week, as cron reads it
    "0 0 * jan,jul sun",
    "@weekly",
    "5 4 * * 7",
    "* * * * * */10",  # six fields: seconds last
]


def _systemd_times(values: list[str], base: str, n: int) -> list[datetime]:
    times: set[datetime] = set()
    for v in values:
        out = subprocess.run(
            ["systemd-analyze", "calendar", f"--base-time={base}", f"--iterations={n}", v],
            capture_output=True, text=True, check=True, env={**os.environ, "TZ": "UTC"},
        ).stdout
        for m in re.finditer(r"(?:Next elapse|Iter\. #\d+): \w+ (\S+ \S+) UTC", out):
            times.add(datetime.fromisoformat(m.group(1)).replace(tzinfo=timezone.utc))
    return sorted(times)[:n]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
@pytest.mark.parametrize("expr", CASES)
def test_on_calendar_fires_when_cron_does(expr: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    base = datetime(2026, 1, 1, 0, 0, 30, tzinfo=timezone.utc)
    want = next_times(parse(expr), base, 12)
    got = _systemd_times(on_calendar(expr), "2026-01-01 00:00:30 UTC", 12)
    assert got == [t.astimezone(timezone.utc) for t in want]


def test_on_calendar_time_zone_and_refusals() -> None:
    assert on_calendar("CRON_TZ=Europe/Lisbon 0 2 * * *") == ["*-*-* 02:00:00 Europe/Lisbon"]
    with pytest.raises(UsageError, match="no systemd equivalent"):
        on_calendar("0 0 L * *")


def test_two_files_with_the_same_stem_get_two_unit_pairs(tmp_path: Path,
                                                         systemctl_log: Path) -> None:
    """rt18 #1: flowsh-backup.service was rewritten to run the second backup.yaml."""
    sched = SystemdScheduler()
    wfs = []
    for app in ("app1", "app2"):
        (tmp_path / app).mkdir()
        f = tmp_path / app / "backup.yaml"
        f.write_text('schedule: "0 1 * * *"\nsteps:\n  - {name: a, run: "true"}\n')
        wfs.append(load_workflow(f))
        sched.add(wfs[-1])
    d = unit_dir()
    for wf in wfs:
        service = (d / f"flowsh-{wf.identity}.service").read_text()
        assert f" run {wf.path} --resume --scheduled --quiet\n" in service
    assert {(e.name, e.source) for e in sched.list()} == {(w.identity, w.path) for w in wfs}
    with pytest.raises(UsageError, match="names 2 scheduled workflows"):
        sched.remove("backup")
    sched.remove(str(wfs[0].path))
    assert [e.name for e in sched.list()] == [wfs[1].identity]


def test_a_pair_named_after_the_bare_stem_is_replaced(tmp_path: Path,
                                                      systemctl_log: Path) -> None:
    f = tmp_path / "backup.yaml"
    f.write_text('schedule: "0 1 * * *"\nsteps:\n  - {name: a, run: "true"}\n')
    wf = load_workflow(f)
    d = unit_dir()
    d.mkdir(parents=True, exist_ok=True)
    mark = f"# Managed by flowsh (flowsh:backup) from {f}.\n"
    (d / "flowsh-backup.timer").write_text(mark + "[Timer]\nOnCalendar=*-*-* 01:00:00\n")
    (d / "flowsh-backup.service").write_text(mark + "[Service]\nExecStart=/bin/true\n")
    assert [e.name for e in SystemdScheduler().list()] == ["backup"]
    SystemdScheduler().add(wf)
    assert not (d / "flowsh-backup.timer").exists()
    assert not (d / "flowsh-backup.service").exists()
    assert [e.name for e in SystemdScheduler().list()] == [wf.identity]
    assert "disable --now flowsh-backup.timer" in systemctl_log.read_text()
