"""Durable state: both backends, resume, retry, crashes (kill -9), overlap locks, bad stores."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from flowsh.engine import RunOptions, run_workflow
from flowsh.errors import EXIT_LOCKED, EXIT_NOT_FOUND, EXIT_STATE, NotFoundError, StateError
from flowsh.loader import load_workflow
from flowsh.state import RunRecord, StepRecord
from flowsh.store import open_backend
from tests.conftest import fill_disk, wait_dead

Cli = Callable[..., subprocess.CompletedProcess[str]]


def _record(run_id: str = "r1", workflow: str = "w", started: float = 1.0) -> RunRecord:
    return RunRecord(run_id=run_id, workflow=workflow, file=None, definition_hash="h",
                     params={"a": "1"}, started_at=started, step_names=["s"],
                     steps={"s": StepRecord(name="s")})


@pytest.mark.parametrize("scheme", ["sqlite", "json"])
def test_backend_round_trip(scheme: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/x.db" if scheme == "sqlite" else f"json:///{tmp_path}/runs"
    b = open_backend(url)
    run = _record()
    b.create_run(run)
    step = run.steps["s"]
    step.status, step.attempts, step.outputs = "succeeded", 2, {"K": "v"}
    b.save_step(run, step)
    run.status, run.exit_code = "succeeded", 0
    b.update_run(run)
    b.create_run(_record("r2", started=2.0))
    again = b.load_run("r1")
    assert again.status == "succeeded" and again.steps["s"].outputs == {"K": "v"}
    assert again.steps["s"].attempts == 2 and again.params == {"a": "1"}
    assert [r.run_id for r in b.list_runs("w")] == ["r2", "r1"]
    with pytest.raises(NotFoundError):
        b.load_run("nope")
    assert b.delete_runs(["r1"]) == 1
    assert [r.run_id for r in b.list_runs()] == ["r2"]
    b.close()
    files = [tmp_path / "x.db"] if scheme == "sqlite" else list((tmp_path / "runs").iterdir())
    for f in files:
        assert (f.stat().st_mode & 0o777) == 0o600, f
    parent = files[0].parent
    assert (parent.stat().st_mode & 0o777) == 0o700


def test_json_state_is_the_seeds_format_extended(write_flow: Callable[..., Path], tmp_path: Path) -> None:
    path = write_flow("steps: [{name: a, run: 'true'}]")
    url = f"json:///{tmp_path}/st"
    rec = run_workflow(load_workflow(path), RunOptions(state_url=url))
    data = json.loads((tmp_path / "st" / f"state_{rec.run_id}.json").read_text())
    assert data["format"] == "flowsh.run/1" and "step" in data and "data" in data
    assert data["steps"]["a"]["status"] == "succeeded"
    assert not [p for p in (tmp_path / "st").iterdir() if p.name.endswith(".tmp")]


def test_corrupt_and_foreign_json_files_are_reported_and_left_intact(tmp_path: Path, cli: Cli) -> None:
    d = tmp_path / "st"
    d.mkdir()
    (d / "state_bad.json").write_text('{"step": "x", "data": ')
    (d / "state_seed.json").write_text('{"step": "extract_data", "data": {}}')
    for rid, what in [("bad", "corrupt"), ("seed", "not a flowsh state file")]:
        res = cli("status", rid, "--state", f"json:///{d}")
        assert res.returncode == EXIT_STATE
        assert what in res.stderr and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert (d / "state_bad.json").read_text() == '{"step": "x", "data": '


@pytest.mark.parametrize("where", ["run", "step"])
def test_a_record_with_an_unknown_status_is_refused_in_one_line(
        where: str, write_flow: Callable[..., Path], tmp_path: Path, cli: Cli) -> None:
    url = f"json:///{tmp_path}/st"
    rec = run_workflow(load_workflow(write_flow("steps: [{name: a, run: 'true'}]")),
                       RunOptions(state_url=url))
    path = tmp_path / "st" / f"state_{rec.run_id}.json"
    data = json.loads(path.read_text())
    if where == "run":
        data["status"] = "finished"
    else:
        data["steps"]["a"]["status"] = "done"
    path.write_text(json.dumps(data))
    res = cli("status", rec.run_id, "--state", url)
    assert res.returncode == EXIT_STATE, res.stderr
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    field = "'finished', which is not a run status" if where == "run" else \
        "'done', which is not a step status"
    assert field in res.stderr and "succeeded" in res.stderr


def test_corrupt_sqlite_and_unknown_run(tmp_path: Path, cli: Cli) -> None:
    db = tmp_path / "bad.db"
    db.write_bytes(b"this is not sqlite" * 100)
    res = cli("history", "--state", f"sqlite:///{db}")
    assert res.returncode == EXIT_STATE and "corrupt" in res.stderr
    assert db.read_bytes() == b"this is not sqlite" * 100
    res = cli("status", "nope")
    assert res.returncode == EXIT_NOT_FOUND and "no run 'nope'" in res.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_state_dir(tmp_path: Path, cli: Cli) -> None:  # pragma: no cover - non-root
    d = tmp_path / "ro"
    d.mkdir(mode=0o500)
    res = cli("history", "--state", f"json:///{d}/x")
    assert res.returncode == EXIT_STATE


def test_unwritable_state_dir_as_any_user(tmp_path: Path, cli: Cli) -> None:
    # A path under a regular file can never be created, root or not.
    blocker = tmp_path / "file"
    blocker.write_text("")
    # prune: history only reads, and says "no runs" rather than make a store.
    res = cli("prune", "--keep", "5", "--state", f"sqlite:///{blocker}/sub/x.db")
    assert res.returncode == EXIT_STATE and str(blocker) in res.stderr
    assert "Traceback" not in res.stderr




@pytest.mark.parametrize("scheme", ["json", "sqlite"])
def test_full_disk_is_one_line_and_leaves_records_intact(scheme: str, tiny_disk: Path) -> None:
    url = f"json:///{tiny_disk}/st" if scheme == "json" else f"sqlite:///{tiny_disk}/f.db"
    b = open_backend(url)
    run = _record()
    b.create_run(run)
    fill_disk(tiny_disk)
    run.status = "failed"
    run.params = {"big": "y" * 200_000}  # more than is left
    with pytest.raises(StateError) as info:
        b.update_run(run)
    assert "\n" not in str(info.value)
    assert "space" in str(info.value) or "full" in str(info.value)
    b.close()
    (tiny_disk / "filler").unlink()
    again = open_backend(url)
    kept = again.load_run("r1")
    again.close()
    assert kept.status == "running" and kept.params == {"a": "1"}  # the old record, whole
    if scheme == "json":
        assert [p.name for p in (tiny_disk / "st").iterdir()] == ["state_r1.json"]


# -- resume and retry ----------------------------------------------------------------------

FLAKY = """
steps:
  - {name: one, run: 'echo one >> ran; echo "ROWS=abc" >> "$FLOWSH_OUTPUT"'}
  - {name: two, run: 'echo two >> ran; [ -e fixed ]'}
  - {name: three, run: 'echo "three $ROWS" >> ran'}
"""


def test_resume_skips_succeeded_steps_and_restores_outputs(
    write_flow: Callable[..., Path], tmp_path: Path, cli: Cli
) -> None:
    path = write_flow(FLAKY)
    first = cli("run", str(path))
    assert first.returncode == 1
    run_id = first.stderr.split("run ")[1].split()[0]
    (tmp_path / "fixed").touch()
    res = cli("resume", run_id)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "ran").read_text().splitlines() == ["one", "two", "two", "three abc"]
    status = json.loads(cli("status", run_id, "--json").stdout)
    assert status["status"] == "succeeded"
    assert {n: s["attempts"] for n, s in status["steps"].items()} == {"one": 1, "two": 2, "three": 1}
    assert cli("resume", run_id).returncode == 2  # nothing left to resume


def test_run_resume_flag_picks_latest_unfinished(write_flow: Callable[..., Path], tmp_path: Path,
                                                 cli: Cli) -> None:
    path = write_flow(FLAKY)
    assert cli("run", str(path), "--resume").returncode == 1  # nothing to resume: a new run
    (tmp_path / "fixed").touch()
    assert cli("run", str(path), "--resume").returncode == 0
    assert (tmp_path / "ran").read_text().splitlines() == ["one", "two", "two", "three abc"]
    hist = json.loads(cli("history", "--json").stdout)
    assert len(hist) == 1 and hist[0]["status"] == "succeeded"


def test_resume_refuses_removed_step_unless_forced(write_flow: Callable[..., Path], cli: Cli) -> None:
    path = write_flow(FLAKY)
    run_id = cli("run", str(path)).stderr.split("run ")[1].split()[0]
    path.write_text(FLAKY.replace("three", "third"))
    res = cli("resume", run_id)
    assert res.returncode == 2 and "three" in res.stderr and "--force" in res.stderr
    res = cli("resume", run_id, "--force")
    assert "changed since run" in res.stderr  # still a warning, then it runs


def test_retry_one_step_and_downstream(write_flow: Callable[..., Path], tmp_path: Path, cli: Cli) -> None:
    (tmp_path / "fixed").touch()
    path = write_flow(FLAKY)
    run_id = cli("run", str(path)).stderr.split("run ")[1].split()[0]
    assert cli("retry", run_id, "--step", "two").returncode == 0
    assert (tmp_path / "ran").read_text().splitlines()[-1] == "two"
    assert cli("retry", run_id, "--step", "two", "--downstream").returncode == 0
    assert (tmp_path / "ran").read_text().splitlines()[-2:] == ["two", "three abc"]
    res = cli("retry", run_id, "--step", "nope")
    assert res.returncode == EXIT_NOT_FOUND


# -- crashes: kill -9 the runner at varied points, then resume ------------------------------

CRASHY = """
name: crashy
steps:
""" + "".join(
    f"  - {{name: s{i}, run: 'sleep 0.0{i}; echo s{i} >> ran'}}\n" for i in range(1, 9)
)


def _succeeded() -> set[str]:
    b = open_backend()
    try:
        runs = b.list_runs("crashy", limit=1)
        if not runs:
            return set()
        run = b.load_run(runs[0].run_id)
        return {n for n, s in run.steps.items() if s.status == "succeeded"}
    finally:
        b.close()


def test_kill_9_at_varied_points_then_resume_runs_each_succeeded_step_once(
    write_flow: Callable[..., Path], tmp_path: Path, cli: Cli, home: Path
) -> None:
    rng = random.Random(1234)
    path = write_flow(CRASHY)
    # scripts/torture.py makes 100 such trials per backend; here, each kill point once or
    # twice (k = trial % 8).
    trials, crashed, completed = 12, 0, 0
    for trial in range(trials):
        ran = tmp_path / "ran"
        ran.unlink(missing_ok=True)
        proc = subprocess.Popen([sys.executable, "-m", "flowsh", "run", "-q", str(path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # Kill at a varied point: after k steps have written their line (k = 0: as soon
        # as the run exists), plus a random few milliseconds into what comes next.
        k = trial % 8
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            lines = ran.read_text().count("\n") if ran.exists() else 0
            if lines >= k and (k or list((home / "runs").glob("*"))):
                break
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.06))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(0.15)  # let orphaned step processes finish writing
        done_before = _succeeded()
        before = ran.read_text().splitlines() if ran.exists() else []
        hist = json.loads(cli("history", "crashy", "--json", "-n", "1").stdout)
        if not hist:  # killed before the run was recorded: nothing to resume
            res = cli("run", "-q", str(path))
        elif hist[0]["status"] == "succeeded":  # finished before the kill
            completed += 1
            res = subprocess.CompletedProcess([], 0, "", "")
        else:
            assert hist[0]["status"] == "crashed", hist[0]
            crashed += 1
            if trial % 2:
                res = cli("resume", "-q", hist[0]["run_id"])
            else:
                res = cli("run", "-q", "--resume", str(path))
        assert res.returncode == 0, (trial, res.stderr)
        after = ran.read_text().splitlines()
        for step in done_before:
            assert after.count(step) == 1, (trial, step, before, after)
        assert set(after) == {f"s{i}" for i in range(1, 9)}, (trial, after)
        b = open_backend()
        final = b.load_run(b.list_runs("crashy", limit=1)[0].run_id)
        b.close()
        assert final.status == "succeeded"
        assert all(s.status == "succeeded" for s in final.steps.values())
        b = open_backend()  # next trial starts from a clean history
        b.delete_runs([r.run_id for r in b.list_runs()])
        b.close()
        shutil.rmtree(home / "runs")
    # The kill points must really have fallen mid-run.
    assert crashed >= trials - 3, (crashed, completed)


def test_status_marks_a_dead_runner_crashed(write_flow: Callable[..., Path], tmp_path: Path,
                                            cli: Cli) -> None:
    path = write_flow("steps: [{name: a, run: 'echo go > started; sleep 30'}]")
    proc = subprocess.Popen([sys.executable, "-m", "flowsh", "run", "-q", str(path)])
    while not (tmp_path / "started").exists():
        time.sleep(0.05)
    assert json.loads(cli("status", "--json").stdout)["status"] == "running"
    proc.kill()
    proc.wait()
    st = json.loads(cli("status", "--json").stdout)
    assert st["status"] == "crashed" and st["steps"]["a"]["status"] == "interrupted"


# -- overlapping runs -------------------------------------------------------------------------


def test_overlap_skip_wait_allow(write_flow: Callable[..., Path], tmp_path: Path, cli: Cli) -> None:
    path = write_flow("""
        name: nightly
        steps: [{name: a, run: 'touch started.$$; until [ -e release ]; do sleep 0.05; done'}]
    """)
    first = subprocess.Popen([sys.executable, "-m", "flowsh", "run", "-q", str(path)])
    while not list(tmp_path.glob("started.*")):
        time.sleep(0.05)
    skipped = cli("run", "-q", str(path))
    assert skipped.returncode == EXIT_LOCKED
    assert "already running" in skipped.stderr and "nightly" in skipped.stderr
    assert "pid" in skipped.stderr
    waited = cli("run", "-q", "--overlap", "wait", "--lock-timeout", "0.2s", str(path))
    assert waited.returncode == EXIT_LOCKED and "gave up after waiting" in waited.stderr
    allowed = subprocess.Popen([sys.executable, "-m", "flowsh", "run", "-q", "--overlap",
                                "allow", str(path)])
    while len(list(tmp_path.glob("started.*"))) < 2:
        time.sleep(0.05)
    waiter = subprocess.Popen([sys.executable, "-m", "flowsh", "run", "-q", "--overlap",
                               "wait", str(path)])
    time.sleep(1.0)
    assert waiter.poll() is None  # blocked on the lock, its step not started
    assert len(list(tmp_path.glob("started.*"))) == 2
    (tmp_path / "release").touch()
    assert allowed.wait(timeout=30) == 0
    assert first.wait(timeout=30) == 0
    assert waiter.wait(timeout=30) == 0  # ran once the holder finished
    assert len(list(tmp_path.glob("started.*"))) == 3


def test_lock_dies_with_its_process(write_flow: Callable[..., Path], tmp_path: Path, cli: Cli) -> None:
    path = write_flow("steps: [{name: a, run: 'touch started; sleep 30'}]")
    proc = subprocess.Popen([sys.executable, "-m", "flowsh", "run", "-q", str(path)])
    while not (tmp_path / "started").exists():
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    path.write_text("steps: [{name: a, run: 'true'}]\n")
    assert cli("run", "-q", str(path)).returncode == 0


def test_two_processes_writing_one_database_lose_nothing(
    write_flow: Callable[..., Path], tmp_path: Path
) -> None:
    body = "".join(f"  - {{name: s{i}, run: 'true'}}\n" for i in range(60))
    a = write_flow("name: wa\nconcurrency: 4\nsteps:\n" + body.replace("'true'}", "'true', needs: []}"), "a.yaml")
    b = write_flow("name: wb\nsteps:\n" + body, "b.yaml")
    procs = [subprocess.Popen([sys.executable, "-m", "flowsh", "run", "-q", str(p)]) for p in (a, b)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    db = sqlite3.connect(Path(os.environ["FLOWSH_HOME"]) / "flowsh.db")
    rows = db.execute("SELECT r.workflow, count(*) FROM steps s JOIN runs r USING (run_id) "
                      "WHERE s.status = 'succeeded' GROUP BY r.workflow").fetchall()
    assert sorted(rows) == [("wa", 60), ("wb", 60)]


def test_prune_keep_and_older_than(write_flow: Callable[..., Path], cli: Cli, home: Path) -> None:
    path = write_flow("steps: [{name: a, run: 'true'}]")
    for _ in range(4):
        assert cli("run", "-q", str(path)).returncode == 0
    runs = json.loads(cli("history", "--json").stdout)
    res = cli("prune", "--keep", "1")
    assert res.returncode == 0 and "deleted 3 run(s)" in res.stdout
    left = json.loads(cli("history", "--json").stdout)
    assert [r["run_id"] for r in left] == [runs[0]["run_id"]]
    assert sorted(p.name for p in (home / "runs").iterdir()) == [runs[0]["run_id"]]
    assert "deleted 0" in cli("prune", "--older-than", "30d").stdout
    assert cli("prune").returncode == 2


def test_workflow_state_key_chooses_the_backend(write_flow: Callable[..., Path],
                                                 tmp_path: Path, cli: Cli) -> None:
    store = tmp_path / "wf-state"
    path = write_flow(f"state: json:///{store}\nsteps: [{{name: a, run: 'true'}}]\n")
    assert cli("run", "-q", str(path)).returncode == 0
    files = list(store.glob("state_*.json"))
    assert len(files) == 1
    res = cli("history", "--json", "--state", f"json:///{store}")
    assert json.loads(res.stdout)[0]["status"] == "succeeded"
    assert cli("run", "-q", str(path), "--state", f"json:///{store}2").returncode == 0
    assert len(list(store.glob("state_*.json"))) == 1  # the CLI's --state wins


def test_logs_follow_streams_until_the_run_ends(write_flow: Callable[..., Path], tmp_path: Path,
                                                cli: Cli) -> None:
    path = write_flow("""
        steps:
          - {name: talk, run: 'for i in 1 2 3; do echo "line $i"; [ $i = 1 ] && touch spoke; sleep 0.4; done'}
          - {name: after, run: 'echo done'}
    """)
    runner = subprocess.Popen([sys.executable, "-m", "flowsh", "run", "-q", str(path)])
    while not (tmp_path / "spoke").exists():
        time.sleep(0.05)
    run_id = json.loads(cli("status", "--json").stdout)["run_id"]
    follow = cli("logs", run_id, "--follow")  # returns once the run has finished
    assert runner.wait(timeout=30) == 0
    assert follow.returncode == 0
    out = follow.stdout
    assert "==> talk <==" in out and "line 1\nline 2\nline 3\n" in out
    assert "==> after <==\ndone\n" in out


def test_logs_follow_ends_when_the_runner_is_killed(write_flow: Callable[..., Path],
                                                    tmp_path: Path, cli: Cli) -> None:
    path = write_flow("""
        steps:
          - {name: talk, run: 'echo hello; touch spoke; sleep 60'}
    """)
    runner = subprocess.Popen([sys.executable, "-m", "flowsh", "run", "-q", str(path)])
    while not (tmp_path / "spoke").exists():
        assert runner.poll() is None
        time.sleep(0.05)
    run_id = json.loads(cli("status", "--json").stdout)["run_id"]
    follow = subprocess.Popen([sys.executable, "-m", "flowsh", "logs", run_id, "--follow"],
                              stdout=subprocess.PIPE, text=True)
    runner.kill()
    runner.wait()
    out, _ = follow.communicate(timeout=60)  # it waited for ever before
    assert follow.returncode == 0 and "hello" in out
    record = json.loads(cli("status", run_id, "--json").stdout)
    assert record["status"] == "crashed"
    orphan = record["steps"]["talk"].get("pid")
    if orphan:  # the killed runner's step: not this test's to leave behind
        with contextlib.suppress(ProcessLookupError):
            os.killpg(orphan, signal.SIGKILL)


@pytest.mark.parametrize("kept", [True, False])
def test_secret_outputs_are_masked_in_state_and_resume_gets_them(
    write_flow: Callable[..., Path], tmp_path: Path, cli: Cli, home: Path, kept: bool
) -> None:
    # Issue 11 item 3: the state keeps the mask, the run's private directory the value
    # (0600), so a resume computes with the real one; without that file (resumed on another
    # host) it says so.
    path = write_flow(FLAKY.replace("ROWS", "API_TOKEN"))
    run_id = cli("run", str(path)).stderr.split("run ")[1].split()[0]
    stored = json.loads(cli("status", run_id, "--json").stdout)
    assert stored["steps"]["one"]["outputs"] == {"API_TOKEN": "***"}
    if not kept:
        (home / "runs" / run_id / "one.secret-outputs.json").unlink()
    (tmp_path / "fixed").touch()
    res = cli("resume", run_id)
    if kept:
        assert res.returncode == 0
        assert "held a secret" not in res.stderr
        assert (tmp_path / "ran").read_text().splitlines()[-1] == "three abc"
        return
    # Refused before anything runs: a step never gets the mask (SECRET-2).
    before = (tmp_path / "ran").read_text()
    assert res.returncode == 2, res.stderr
    assert "API_TOKEN held a secret" in res.stderr and "--step one --downstream" in res.stderr
    assert (tmp_path / "ran").read_text() == before
    res = cli("retry", run_id, "--step", "one", "--downstream")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "ran").read_text().splitlines()[-1] == "three abc"


def test_sqlite_url_path_is_absolute_like_json(tmp_path: Path, cli: Cli) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    for url in (f"sqlite://{tmp_path}/a.db", f"sqlite:///{tmp_path}/b.db"):
        assert cli("prune", "--keep", "5", "--state", url, cwd=elsewhere).returncode == 0
    assert (tmp_path / "a.db").exists() and (tmp_path / "b.db").exists()
    assert list(elsewhere.iterdir()) == []


def test_prune_with_keep_and_older_than_needs_both(write_flow: Callable[..., Path],
                                                   cli: Cli) -> None:
    path = write_flow("steps: [{name: a, run: 'true'}]")
    for _ in range(3):
        assert cli("run", "-q", str(path)).returncode == 0
    assert "deleted 0 run(s)" in cli("prune", "--keep", "0", "--older-than", "1d").stdout
    assert "deleted 3 run(s)" in cli("prune", "--keep", "0", "--older-than", "0s").stdout


def test_a_directory_where_a_file_goes_is_one_line(tmp_path: Path, write_flow: Callable[..., Path],
                                                   cli: Cli) -> None:
    d = tmp_path / "st"
    (d / "state_x.json").mkdir(parents=True)
    res = cli("status", "x", "--state", f"json:///{d}")
    assert res.returncode == 3 and "Traceback" not in res.stderr
    path = write_flow("steps: [{name: a, run: 'true'}]")
    assert cli("run", "-q", str(path)).returncode == 0
    rid = json.loads(cli("history", "--json").stdout)[0]["run_id"]
    res = cli("report", rid, "-o", str(tmp_path))
    assert res.returncode == 2 and "is a directory" in res.stderr and "Traceback" not in res.stderr


def test_resume_after_kill_9_stops_the_orphaned_step_first(
    write_flow: Callable[..., Path], tmp_path: Path, cli: Cli
) -> None:
    path = write_flow("""
        steps:
          - name: long
            run: 'if [ -e again ]; then echo rerun >> marks; else touch again; echo $$ > pid; sleep 60; echo orphan >> marks; fi'
    """)
    proc = subprocess.Popen([sys.executable, "-m", "flowsh", "run", "-q", str(path)])
    while not (tmp_path / "pid").exists():
        time.sleep(0.05)
    time.sleep(0.3)  # the step's start is recorded with its pid
    proc.kill()
    proc.wait()
    orphan = int((tmp_path / "pid").read_text())
    os.kill(orphan, 0)  # still running: the runner's death did not take it along
    run_id = json.loads(cli("history", "--json").stdout)[0]["run_id"]
    res = cli("resume", "-q", run_id)
    assert res.returncode == 0, res.stderr
    assert f"pid {orphan}" in res.stderr and "stopped it" in res.stderr
    assert (tmp_path / "marks").read_text() == "rerun\n"  # the orphan never finished
    assert wait_dead(orphan)
