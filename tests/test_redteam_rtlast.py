"""Red-team reproducers for the session's last fixes (SLOT-8 second tick, pool keeper,
`running` before start, ownfile). Each test failed on integ3 at ed296ae.

Real `flowsh` processes and files; the clock is driven with FLOWSH_NOW (the contract's
test hook), the exported script runs under `env -i PATH=/usr/bin:/bin`.
"""

from __future__ import annotations

from pathlib import Path

from tests import redteam_kit as kit
from tests.conftest import run_cli
from tests.redteam_kit import ok as _ok
from tests.redteam_kit import script as _script

# Findings still open: strict xfails, so that a fix shows as an unexpected pass.
OPEN: frozenset[str] = frozenset()

_open_findings = kit.open_findings("rtlast", OPEN)


TWO_STEPS = """\
name: daily
schedule: "CRON_TZ=UTC 0 2 * * *"
steps:
  - name: a
    run: echo a >> done
  - name: b
    needs: [a]
    run: echo b >> done
"""


def test_tick_after_only_selection_runs_the_whole_slot(tmp_path: Path) -> None:
    """HIGH. `flowsh run --scheduled --only a` succeeds (b "not selected"); the cron tick
    of the same slot then says "slot ... already succeeded: nothing to do" and exits 0:
    step b never runs for that day and nothing says so (SLOT-8 read a selection's run
    as the slot's). Expected: the tick runs the slot (a and b)."""
    flow = tmp_path / "daily.yaml"
    flow.write_text(TWO_STEPS)
    _ok(run_cli("run", "-q", str(flow), "--scheduled", "--only", "a", cwd=tmp_path,
                env={"FLOWSH_NOW": "2026-12-05T02:30:00Z"}))
    r = run_cli("run", "-q", str(flow), "--scheduled", cwd=tmp_path,
                env={"FLOWSH_NOW": "2026-12-05T02:31:00Z"})
    _ok(r)
    assert "already succeeded" not in r.stdout + r.stderr
    assert (tmp_path / "done").read_text().split() == ["a", "a", "b"]


def test_script_tick_after_only_selection_runs_the_whole_slot(tmp_path: Path,
                                                              home: Path) -> None:
    """HIGH. The exported script has the same hole: `f.sh --scheduled --only a`, then
    `f.sh --scheduled` for the same slot runs nothing (flowsh_slot_done read the
    checkpoint's head only, never its "not selected" steps)."""
    flow = tmp_path / "daily.yaml"
    flow.write_text(TWO_STEPS)
    out = tmp_path / "daily.sh"
    _ok(run_cli("export", "--bash", str(flow), "-o", str(out)))
    _ok(_script(out, "-q", "--scheduled", "--only", "a", home=home,
                now="2026-12-05T02:30:00Z"))
    r = _script(out, "-q", "--scheduled", home=home, now="2026-12-05T02:31:00Z")
    _ok(r)
    assert "already succeeded" not in r.stdout + r.stderr
    assert (tmp_path / "done").read_text().split() == ["a", "a", "b"]
    # and a third tick of the slot, now whole, runs nothing (SLOT-8 still holds)
    r = _script(out, "--scheduled", home=home, now="2026-12-05T02:32:00Z")
    _ok(r)
    assert "already succeeded" in r.stdout


DST_FLOW = """\
name: dst
schedule: "CRON_TZ=America/New_York 30 1 * * *"
steps:
  - name: a
    run: echo "$FLOWSH_SCHEDULED_TIME" >> done
"""


def test_second_tick_of_a_slot_in_the_repeated_hour_runs_nothing(tmp_path: Path) -> None:
    """HIGH. On a fall-back day the slot 01:30 America/New_York (01:30-04:00) is the tick's
    slot at 05:45Z and again at 06:45Z (01:45 EST). `flowsh run --scheduled` ran it twice,
    then a third time: SLOT-8's check compared the recorded slot (fixed offset) with the
    zone's datetime, and an aware datetime in a repeated hour is never equal to one of
    another zone (PEP 495). The exported script ran it once. Expected: once."""
    flow = tmp_path / "dst.yaml"
    flow.write_text(DST_FLOW)
    for now in ("2026-11-01T05:45:00Z", "2026-11-01T06:45:00Z", "2026-11-01T06:50:00Z"):
        _ok(run_cli("run", "-q", str(flow), "--scheduled", cwd=tmp_path,
                    env={"FLOWSH_NOW": now}))
    assert (tmp_path / "done").read_text().split() == ["2026-11-01T01:30:00-04:00"]


def test_scheduled_resume_in_the_repeated_hour_takes_up_its_own_run(tmp_path: Path) -> None:
    """MEDIUM. A run of the 01:30 slot on a fall-back day that failed, then `flowsh run
    --scheduled --resume` in the same slot: the run was read as one of *another* slot
    (SLOT-5's same-slot test, PEP 495 again), finished, and a new run of the same slot
    started after it: the succeeded step ran twice. Expected: one resumed run."""
    flow = tmp_path / "dst.yaml"
    flow.write_text(DST_FLOW.replace('run: echo "$FLOWSH_SCHEDULED_TIME" >> done',
                                     'run: echo "$FLOWSH_SCHEDULED_TIME" >> done\n'
                                     "  - name: b\n    needs: [a]\n    run: test -e ok"))
    env = {"FLOWSH_NOW": "2026-11-01T05:45:00Z"}
    assert run_cli("run", "-q", str(flow), "--scheduled", cwd=tmp_path, env=env).returncode == 1
    (tmp_path / "ok").write_text("")
    _ok(run_cli("run", "-q", str(flow), "--scheduled", "--resume", cwd=tmp_path,
                env={"FLOWSH_NOW": "2026-11-01T05:50:00Z"}))
    assert (tmp_path / "done").read_text().split() == ["2026-11-01T01:30:00-04:00"]


PARAM_FLOW = """\
name: reg
schedule: "CRON_TZ=UTC 0 2 * * *"
params:
  region: eu
steps:
  - name: a
    run: echo "$region" >> done
"""


def test_tick_with_other_params_runs_its_slot(tmp_path: Path) -> None:
    """HIGH (open: a contract question). Two crontab lines for one file and schedule,
    `-- region=eu` and `-- region=us`: the second tick of the slot prints "slot ...
    already succeeded in run <eu's run>: nothing to do" and exits 0, so `us` never runs,
    silently, every day. SLOT-8 looks at the slot only, never at the run's parameters.
    Expected: a run with other parameters is not this tick's run (compare the non-secret
    params; secrets are masked in the record)."""
    flow = tmp_path / "reg.yaml"
    flow.write_text(PARAM_FLOW)
    _ok(run_cli("run", "-q", str(flow), "--scheduled", "--", "region=eu", cwd=tmp_path,
                env={"FLOWSH_NOW": "2026-12-05T02:30:00Z"}))
    _ok(run_cli("run", "-q", str(flow), "--scheduled", "--", "region=us", cwd=tmp_path,
                env={"FLOWSH_NOW": "2026-12-05T02:30:01Z"}))
    assert (tmp_path / "done").read_text().split() == ["eu", "us"]


def test_script_tick_with_other_params_runs_its_slot(tmp_path: Path, home: Path) -> None:
    """HIGH (open). The exported script's flowsh_slot_done has the same hole."""
    flow = tmp_path / "reg.yaml"
    flow.write_text(PARAM_FLOW)
    out = tmp_path / "reg.sh"
    _ok(run_cli("export", "--bash", str(flow), "-o", str(out)))
    _ok(_script(out, "-q", "--scheduled", "--", "region=eu", home=home,
                now="2026-12-05T02:30:00Z"))
    _ok(_script(out, "-q", "--scheduled", "--", "region=us", home=home,
                now="2026-12-05T02:30:01Z"))
    assert (tmp_path / "done").read_text().split() == ["eu", "us"]


def test_catchup_window_is_a_duration_across_fall_back(tmp_path: Path) -> None:
    """LOW. `catchup: {window: 3h}` on an hourly America/New_York schedule, ticking at
    02:10 EST on the fall-back night: the window [S - 3h, S) was computed on the zone's
    wall clock (S - 3h = 23:00 EDT, 4 real hours), so 4 missed slots ran, 23:00-04:00
    included. Expected (CATCHUP-1, `window` a duration): 00:00-04:00, 01:00-04:00,
    01:00-05:00, then the tick's own 02:00-05:00."""
    flow = tmp_path / "hourly.yaml"
    flow.write_text('name: hourly\nschedule: "CRON_TZ=America/New_York 0 * * * *"\n'
                    "catchup: {window: 3h, policy: all}\nsteps:\n  - name: a\n"
                    '    run: echo "$FLOWSH_SCHEDULED_TIME" >> done\n')
    _ok(run_cli("run", "-q", str(flow), "--scheduled", cwd=tmp_path,
                env={"FLOWSH_NOW": "2026-11-01T07:10:00Z"}))
    assert (tmp_path / "done").read_text().split() == [
        "2026-11-01T00:00:00-04:00", "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:00:00-05:00", "2026-11-01T02:00:00-05:00"]
