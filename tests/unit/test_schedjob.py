"""flowsh.schedjob: the crontab block and systemd units, and that the cron line really runs."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from flowsh.errors import UsageError
from flowsh.loader import load_workflow
from flowsh.schedjob import (
    DEFAULT_PATH,
    carried_env,
    render_crontab,
    render_systemd,
    schedule_name,
    scheduled_job,
    unit_name,
)
from flowsh.state import flowsh_home

FLOW = "name: nightly\nschedule: ['CRON_TZ=Europe/Lisbon 0 2 * * *', '30 4 * * 1']\nsteps:\n  - {name: a, run: 'true'}\n"


def test_job_for_flowsh_run(write_flow: Callable[..., Path], tmp_path: Path) -> None:
    wf = load_workflow(write_flow(FLOW))
    job = scheduled_job(wf)
    assert job.name == schedule_name(wf) == "nightly"
    assert job.argv[-4:] == ["run", str(wf.path), "--resume", "--scheduled"]
    # Expressions given instead of the file's travel with the line: the run's slot is
    # one of theirs (SLOT-2).
    other = scheduled_job(wf, exprs=["CRON_TZ=Asia/Tokyo 30 4 * * *"])
    assert other.argv[-2:] == ["--scheduled-cron", "CRON_TZ=Asia/Tokyo 30 4 * * *"]
    assert scheduled_job(wf, exprs=list(wf.schedule)).argv == job.argv
    assert job.cwd == str(tmp_path.resolve())
    assert dict(job.env)["PATH"] == DEFAULT_PATH
    assert dict(job.env)["FLOWSH_HOME"] == str(flowsh_home().resolve())
    assert job.log == str(flowsh_home().resolve() / "cron" / "nightly.log")
    assert dict(scheduled_job(wf, path="/opt/bin:.:/usr/bin:/opt/bin").env)["PATH"] == "/opt/bin:/usr/bin"


def test_carried_env_made_absolute(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FLOWSH_STATE", "json://state")
    monkeypatch.setenv("FLOWSH_CONFIG", "conf.yaml")
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert carried_env() == [("FLOWSH_STATE", f"json://{tmp_path.resolve()}/state"),
                             ("FLOWSH_CONFIG", str(tmp_path.resolve() / "conf.yaml"))]
    monkeypatch.setenv("FLOWSH_STATE", "sqlite:///:memory:")
    assert ("FLOWSH_STATE", "sqlite:///:memory:") in carried_env()


def test_refusals(write_flow: Callable[..., Path]) -> None:
    wf = load_workflow(write_flow("name: w\nparams:\n  DAY:\nsteps:\n  - {name: a, run: 'true'}\n"))
    with pytest.raises(UsageError, match="parameter DAY has no default"):
        scheduled_job(wf)
    plain = load_workflow(write_flow("name: w\nsteps:\n  - {name: a, run: 'true'}\n", name="p.yaml"))
    with pytest.raises(UsageError, match="no `schedule`"):
        render_crontab(plain)
    with pytest.raises(UsageError, match="cron has no seconds field"):
        render_crontab(plain, ["* * * * * 5"])
    with pytest.raises(UsageError, match="no such script"):
        scheduled_job(plain, script="/no/such/script.sh")


def test_crontab_block(write_flow: Callable[..., Path]) -> None:
    wf = load_workflow(write_flow(FLOW))
    text = render_crontab(wf, restore_tz="UTC")
    lines = text.strip().splitlines()
    assert lines[0].startswith("# BEGIN flowsh:nightly (managed by flowsh from ")
    assert lines[-1] == "# END flowsh:nightly"
    assert lines[1] == "CRON_TZ=Europe/Lisbon" and lines[2].startswith("0 2 * * * cd ")
    assert lines[3] == "CRON_TZ=UTC" and lines[4].startswith("30 4 * * 1 cd ")
    assert "--quiet-on-success --log" in lines[2]


def test_the_cron_line_of_a_script_runs_as_cron_would(write_flow: Callable[..., Path],
                                                      tmp_path: Path) -> None:
    d = tmp_path / "odd dir 'q' $x"
    d.mkdir()
    script = d / "job.sh"
    script.write_text('#!/bin/bash\necho "ran in $PWD with $FLOWSH_HOME; 100%"\nexit 3\n')
    script.chmod(0o755)
    wf = load_workflow(write_flow(FLOW))
    line = next(ln for ln in render_crontab(wf, ["0 2 * * *"], script=str(script)).splitlines()
                if ln.startswith("0 2 * * * "))
    command = line.removeprefix("0 2 * * * ").replace("\\%", "%")  # what cron hands sh
    res = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True,
                         cwd="/", timeout=60, check=False)
    assert res.returncode == 3
    want = f"ran in {d} with {flowsh_home().resolve()}; 100%"
    assert want in res.stdout  # a failure: cron mails the log's tail
    log = flowsh_home().resolve() / "cron" / "nightly.log"
    assert want in log.read_text() and log.stat().st_mode & 0o777 == 0o600


def test_line_breaks_in_paths_refused(write_flow: Callable[..., Path], tmp_path: Path) -> None:
    d = tmp_path / "a\nb"
    d.mkdir()
    wf = load_workflow(write_flow(FLOW))
    (d / "flow.yaml").write_text(Path(wf.path).read_text())
    with pytest.raises(UsageError, match="line break"):
        render_crontab(load_workflow(d / "flow.yaml"))


def test_systemd_units(write_flow: Callable[..., Path], tmp_path: Path) -> None:
    wf = load_workflow(write_flow(FLOW))
    units = render_systemd(wf)
    assert set(units) == {"flowsh-nightly.service", "flowsh-nightly.timer"}
    service, timer = units["flowsh-nightly.service"], units["flowsh-nightly.timer"]
    assert "--quiet" in service and "--resume" in service
    assert "OnCalendar=" in timer and "Europe/Lisbon" in timer
    for name, text in units.items():
        (tmp_path / name).write_text(text)
    res = subprocess.run(["systemd-analyze", "verify", "--user", str(tmp_path / "flowsh-nightly.timer")],
                         capture_output=True, text=True, check=False, timeout=60)
    assert "Unknown key" not in res.stderr and "Failed to parse" not in res.stderr, res.stderr


def test_unit_name() -> None:
    assert unit_name("nightly") == "flowsh-nightly"
    assert unit_name("a b/c@d") == "flowsh-a_b_c_d"


def test_systemd_units_refuse_line_breaks_in_paths(write_flow: Callable[..., Path],
                                                   tmp_path: Path) -> None:
    d = tmp_path / "x\nExecStartPre=touch pwned"
    d.mkdir()
    (d / "flow.yaml").write_text(FLOW)
    wf = load_workflow(d / "flow.yaml")
    try:
        units = render_systemd(wf)
    except UsageError as exc:
        assert "line break" in str(exc)
        return
    service = units["flowsh-nightly.service"]
    assert not any(line.startswith("ExecStartPre=") for line in service.splitlines()), service
