"""Cron's conventions in the lines flowsh writes (issue 18): chronic's rule so MAILTO mails
failures only, the full log kept, --resume, a minimal PATH written once, a silent lock skip.

Each crontab line is run the way cron runs it: `/bin/sh -c LINE` with almost no
environment; what it prints is what cron would mail.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowsh.loader import load_workflow
from flowsh.schedjob import render_crontab
from tests.conftest import run_cli

FLOW = """\
name: nightly
schedule: "0 2 * * *"
steps:
  - {name: a, run: 'echo "a ran" >> ran.txt; echo "out of a"'}
  - {name: b, run: '[ -e fail ] && { echo "b broke" >&2; exit 3; }; echo "b ran" >> ran.txt'}
"""


def _line(flow: Path, **kw: str) -> str:
    block = render_crontab(load_workflow(flow), **kw)  # type: ignore[arg-type]
    line = next(ln for ln in block.splitlines() if ln.startswith("0 2 * * * "))
    return line.removeprefix("0 2 * * * ")


def _cron(command: str, cwd: Path, now: str | None = None) -> subprocess.CompletedProcess[str]:
    # `now` (FLOWSH_NOW): a tick of another day; two ticks of one slot run it once (SLOT-8).
    env = {"HOME": str(cwd), **({"FLOWSH_NOW": now} if now else {})}
    return subprocess.run(["/bin/sh", "-c", command], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    p = tmp_path / "wf" / "nightly.yaml"
    p.parent.mkdir()
    p.write_text(FLOW)
    return p


def test_cron_line_is_silent_on_success_keeps_the_log_and_prints_a_failure(
    flow: Path, tmp_path: Path, home: Path
) -> None:
    command = _line(flow)
    assert ">>" not in command and "2>&1" not in command
    assert "--resume --scheduled --quiet-on-success --log " in command

    ok = _cron(command, tmp_path, "2026-12-04T03:00:00Z")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == "" and ok.stderr == ""  # nothing for cron to mail
    log = (home / "cron" / "nightly.log").read_text()
    assert "nightly: run " in log and " succeeded ===" in log and "out of a" in log
    assert oct((home / "cron" / "nightly.log").stat().st_mode & 0o777) == "0o600"

    (flow.parent / "fail").touch()
    bad = _cron(command, tmp_path, "2026-12-05T03:00:00Z")
    assert bad.returncode == 1
    # chronic: the whole transcript, on stdout, only now — the step's output and the hint.
    assert "out of a" in bad.stdout and "b broke" in bad.stdout
    assert "b: failed" in bad.stdout and "flowsh resume" in bad.stdout
    log = (home / "cron" / "nightly.log").read_text()
    assert log.count("=== ") == 2 and "b broke" in log

    # --resume: the next tick finishes the failed run; `a` is not run again.
    (flow.parent / "fail").unlink()
    again = _cron(command, tmp_path, "2026-12-05T03:00:00Z")
    assert again.returncode == 0 and again.stdout == "" and again.stderr == ""
    assert (flow.parent / "ran.txt").read_text() == "a ran\nb ran\na ran\nb ran\n"
    assert "resuming run" in (home / "cron" / "nightly.log").read_text()


def test_path_is_minimal_and_written_once_unless_asked(
    flow: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    messy = "/opt/x/bin:/usr/bin:.::/opt/x/bin/:/usr/bin:/bin:relative/bin"
    monkeypatch.setenv("PATH", messy + ":" + os.environ["PATH"])
    command = _line(flow)
    assert command.count("PATH=") == 1
    assert " PATH=/usr/local/bin:/usr/bin:/bin " in command
    own = _line(flow, path=os.environ["PATH"])
    value = own.split(" PATH=", 1)[1].split(" ", 1)[0]
    parts = value.split(":")
    assert parts[:3] == ["/opt/x/bin", "/usr/bin", "/bin"]
    assert len(parts) == len(set(parts)) and all(p.startswith("/") for p in parts)


def test_cli_path_from_env(flow: Path) -> None:
    env = {"PATH": f"/opt/y/bin:/opt/y/bin:{os.environ['PATH']}"}
    r = run_cli("export", str(flow), "--crontab", "--path-from-env", env=env)
    assert r.returncode == 0, r.stderr
    assert " PATH=/opt/y/bin:" in r.stdout and r.stdout.count("/opt/y/bin") == 1
    r = run_cli("export", str(flow), "--crontab", env=env)
    assert "/opt/y/bin" not in r.stdout


def _hold_lock(tmp_path: Path, flow: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """A run of `flow`'s workflow name that holds its lock until `release` exists."""
    holder = tmp_path / "holder.yaml"
    started, release = tmp_path / "started", tmp_path / "release"
    holder.write_text(
        "name: nightly\nsteps:\n"
        f"  - {{name: hold, run: 'touch {started}; while [ ! -e {release} ]; do sleep 0.05; done'}}\n"
    )
    proc = subprocess.Popen([sys.executable, "-m", "flowsh", "run", str(holder)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not started.exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    return proc, release


def test_lock_skip_is_silent_in_the_cron_line_and_keeps_exit_75(
    flow: Path, tmp_path: Path, home: Path
) -> None:
    # Two files, one explicit `name:` — the same workflow, hence the same lock.
    proc, release = _hold_lock(tmp_path, flow)
    try:
        skipped = _cron(_line(flow), tmp_path)
        assert skipped.returncode == 75
        assert skipped.stdout == "" and skipped.stderr == ""
        assert "skipped: " in (home / "cron" / "nightly.log").read_text()

        plain = run_cli("run", str(flow))
        assert plain.returncode == 75 and "already running" in plain.stderr  # as before
        quiet = run_cli("run", str(flow), "--skip-quietly")
        assert quiet.returncode == 75 and quiet.stdout == "" and quiet.stderr == ""
    finally:
        release.touch()
        proc.wait(60)
    assert not (flow.parent / "ran.txt").exists()


def test_quiet_on_success_without_log_and_log_without_quiet(flow: Path, tmp_path: Path) -> None:
    r = run_cli("run", str(flow), "--quiet-on-success")
    assert r.returncode == 0 and r.stdout == "" and r.stderr == ""
    log = tmp_path / "logs" / "deep" / "x.log"
    r = run_cli("run", str(flow), "--log", str(log))
    assert r.returncode == 0
    assert "out of a" in r.stdout  # still on screen
    assert "out of a" in log.read_text() and " succeeded ===" in log.read_text()


def test_exported_script_line_mails_only_a_failure(flow: Path, tmp_path: Path,
                                                   home: Path) -> None:
    script = tmp_path / "nightly.sh"
    assert run_cli("export", str(flow), "--bash", "-o", str(script)).returncode == 0
    command = _line(flow, script=str(script))
    ok = _cron(command, tmp_path, "2026-12-04T03:00:00Z")
    assert ok.returncode == 0 and ok.stdout == "" and ok.stderr == "", ok.stdout + ok.stderr
    assert "ok      a" in (home / "cron" / "nightly.log").read_text()
    (tmp_path / "fail").touch()  # an exported script runs in its own directory
    bad = _cron(command, tmp_path, "2026-12-05T03:00:00Z")
    assert bad.returncode != 0 and bad.stderr == ""
    # The log's tail (the script's own lines; step output is in its per-step logs).
    assert "ok      a" in bad.stdout and "failed" in bad.stdout, bad.stdout
