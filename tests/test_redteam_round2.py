"""Defects the second red team found (2026-12-05), each as it was reproduced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from tests.conftest import run_cli


def _run_id(stderr: str) -> str:
    return stderr.split("run ", 1)[1].split()[0]


def test_a_lock_file_that_is_a_link_is_refused_not_written_through(write_flow, home, tmp_path):
    flow = write_flow("steps: [{name: a, run: 'true'}]")
    assert run_cli("run", str(flow), "-q").returncode == 0
    [lock] = list((home / "locks").iterdir())
    precious = tmp_path / "precious.txt"
    precious.write_text("important\n")
    lock.unlink()
    lock.symlink_to(precious)
    res = run_cli("run", str(flow), "-q")
    assert res.returncode == 3 and "is a symbolic link" in res.stderr
    assert precious.read_text() == "important\n"


def test_retry_of_a_live_run_exits_75(write_flow, tmp_path):
    flow = write_flow(f"steps: [{{name: a, run: 'touch {tmp_path}/go; sleep 30'}}]")
    runner = subprocess.Popen([sys.executable, "-m", "flowsh", "run", str(flow), "-q"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 60
        while not (tmp_path / "go").exists():
            assert time.monotonic() < end and runner.poll() is None
            time.sleep(0.05)
        run_id = json.loads(run_cli("status", "--json").stdout)["run_id"]
        res = run_cli("retry", run_id, "--step", "a")
        assert res.returncode == 75, res.stderr
    finally:
        runner.terminate()
        runner.wait(60)


def test_a_cron_log_in_a_linked_directory_is_refused(write_flow, home, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (home / "cron").symlink_to(elsewhere)
    flow = write_flow("steps: [{name: a, run: 'echo a'}]")
    res = run_cli("run", str(flow), "--quiet-on-success", "--log", str(home / "cron" / "a.log"))
    assert res.returncode == 3 and "is a symbolic link" in res.stderr, res.stderr
    assert list(elsewhere.iterdir()) == []


def test_report_of_a_dead_runners_run_says_crashed(write_flow, tmp_path):
    flow = write_flow(f"steps: [{{name: a, run: 'touch {tmp_path}/go; sleep 30'}}]")
    runner = subprocess.Popen([sys.executable, "-m", "flowsh", "run", str(flow), "-q"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.monotonic() + 60
    while not (tmp_path / "go").exists():
        assert time.monotonic() < end and runner.poll() is None
        time.sleep(0.05)
    run_id = json.loads(run_cli("status", "--json").stdout)["run_id"]
    runner.kill()
    runner.wait()
    out = tmp_path / "r.html"
    res = run_cli("report", run_id, "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert "crashed" in res.stdout + out.read_text()
    record = json.loads(run_cli("status", run_id, "--json").stdout)
    pid = record["steps"]["a"].get("pid")
    if pid:
        os.killpg(pid, 9)


def test_a_secret_output_printed_by_its_step_is_masked_in_its_log(write_flow, home, tmp_path):
    flow = write_flow("""
        steps:
          - {name: a, run: 'echo "DB_PASSWORD=pw-S3CR3T-Y" >> "$FLOWSH_OUTPUT"; echo "got pw-S3CR3T-Y"'}
          - {name: b, run: 'exit 1'}
    """)
    res = run_cli("run", str(flow))
    assert res.returncode == 1
    run_id = _run_id(res.stderr)
    log = home / "runs" / run_id / "a.log"
    assert log.read_text() == "got ***\n"
    report = tmp_path / "r.html"
    assert run_cli("report", run_id, "-o", str(report)).returncode == 0
    assert "pw-S3CR3T" not in report.read_text()
    leaks = [p for p in home.rglob("*") if p.is_file() and b"pw-S3CR3T" in p.read_bytes()]
    # Only the 0600 file a resume reads it back from (SECRET-2), gone once the run succeeds.
    assert [p.name for p in leaks] == ["a.secret-outputs.json"]


def test_a_linked_exported_directory_is_refused_by_the_script(tmp_path):
    victim, home = tmp_path / "victim", tmp_path / "home"
    victim.mkdir()
    home.mkdir()
    (home / "exported").symlink_to(victim)
    (tmp_path / "f.yaml").write_text("steps: [{name: a, run: 'echo hi'}]\n")
    assert run_cli("export", "--bash", "f.yaml", "-o", "f.sh", cwd=tmp_path).returncode == 0
    res = subprocess.run(["bash", "f.sh"], cwd=tmp_path, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                              "FLOWSH_HOME": str(home)}, timeout=60, check=False)
    assert res.returncode == 3 and "is a symbolic link" in res.stderr
    assert list(victim.iterdir()) == []


def test_the_heartbeat_goes_on_through_a_long_retry_backoff(write_flow, monkeypatch):
    """A backoff longer than STALE_AFTER let another host take the live run for crashed:
    the loop slept it out in one piece, writing no heartbeat."""
    from flowsh import engine
    from flowsh.builtin.state_sqlite import SQLiteBackend
    from flowsh.loader import load_workflow

    monkeypatch.setattr(engine, "HEARTBEAT_EVERY", 0.3)
    beats: list[float] = []
    real = SQLiteBackend.heartbeat

    def spy(self, run):  # type: ignore[no-untyped-def]
        beats.append(time.monotonic())
        real(self, run)

    monkeypatch.setattr(SQLiteBackend, "heartbeat", spy)
    flow = write_flow("steps: [{name: a, run: 'false', retries: 1, retry_delay: 2s, jitter: 0}]")
    engine.run_workflow(load_workflow(flow), engine.RunOptions())
    # Through the 2 s backoff, a beat every 0.3 s (were 1, at its end).
    assert len(beats) >= 4, beats
