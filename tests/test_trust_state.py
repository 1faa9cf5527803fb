"""Bad state is one line and exit 3, never a traceback nor skipped; disk full; private files
and no symlink following; `flowsh logs` headers in order (issue 11, items 8-11)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import fill_disk, run_cli

Cli = Callable[..., subprocess.CompletedProcess[str]]


def _one_line_error(res: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert res.returncode == code, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    err = [ln for ln in res.stderr.splitlines()
           if ln.startswith("flowsh: error:") or (needles and needles[0] in ln)]
    assert len(err) == 1, res.stderr
    for n in needles:
        assert n in err[0], err[0]


@pytest.fixture
def two_runs(write_flow: Callable[..., Path]) -> Path:
    path = write_flow("""
        steps:
          - {name: a, run: 'echo A=1 >> "$FLOWSH_OUTPUT"'}
          - {name: b, needs: [a], run: 'test -e go'}
    """)
    for _ in range(2):
        assert run_cli("run", str(path)).returncode == 1
    return path


def _run_ids(home: Path) -> list[str]:
    return sorted(p.name for p in (home / "runs").iterdir())


@pytest.mark.parametrize("column", ["params", "step_names", "outputs", "type"])
def test_garbage_in_a_sqlite_row_is_exit_3_everywhere(
    two_runs: Path, home: Path, column: str
) -> None:
    bad = _run_ids(home)[0]
    db = sqlite3.connect(home / "flowsh.db")
    if column == "outputs":
        db.execute("UPDATE steps SET outputs = '{not json' WHERE run_id = ?", (bad,))
    elif column == "type":
        db.execute("UPDATE runs SET params = '[1, 2]' WHERE run_id = ?", (bad,))
    else:
        db.execute(f"UPDATE runs SET {column} = 'garbage' WHERE run_id = ?", (bad,))
    db.commit()
    db.close()
    for args in (["status", bad], ["resume", bad], ["report", bad, "-o", str(home / "r.html")],
                 ["run", str(two_runs), "--resume"], ["history"], ["prune", "--keep", "0"]):
        if column == "outputs" and args[0] in ("history", "prune"):
            continue  # they read run rows only
        if column == "outputs" and args[0] == "run":
            continue  # resumes the newest run, which is intact
        _one_line_error(run_cli(*args), 3, bad, "corrupt record")


@pytest.mark.parametrize("content", ['"run_id": 5', "corrupt"])
def test_bad_json_state_file_is_exit_3_not_skipped(
    write_flow: Callable[..., Path], tmp_path: Path, content: str
) -> None:
    state = f"json://{tmp_path / 'state'}"
    path = write_flow("""
        steps:
          - {name: a, run: 'test -e go'}
    """)
    assert run_cli("run", str(path), "--state", state).returncode == 1
    (file,) = (tmp_path / "state").glob("state_*.json")
    if content == "corrupt":
        file.write_text(file.read_text()[:40])
    else:
        data = json.loads(file.read_text())
        data["run_id"] = 5
        file.write_text(json.dumps(data))
    for args in (["status"], ["history"], ["run", str(path), "--resume"]):
        _one_line_error(run_cli(*args, "--state", state), 3, file.name)
    assert not (tmp_path / "go").exists()


def test_disk_full_on_sqlite_keeps_the_record_and_reads_work(
    write_flow: Callable[..., Path], tmp_path: Path
) -> None:
    """A real full filesystem: a 256 KiB tmpfs (needs root, as CI runs), filled with dd."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                      capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        state = f"sqlite:///{mnt / 'flowsh.db'}"
        path = write_flow("steps:\n  - {name: a, run: 'echo hi'}\n")
        assert run_cli("run", str(path), "--state", state).returncode == 0
        subprocess.run(["dd", "if=/dev/zero", f"of={mnt / 'fill'}", "bs=4k"],
                       capture_output=True, check=False)
        assert os.statvfs(mnt).f_bavail == 0
        res = run_cli("run", str(path), "--state", state)
        _one_line_error(res, 3, "No space left on device; the previous record is intact")
        hist = run_cli("history", "--state", state)
        assert hist.returncode == 0, hist.stderr
        assert hist.stdout.count("succeeded") == 1
        assert run_cli("status", "--state", state).returncode == 0
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_runs_tree_is_private(write_flow: Callable[..., Path], home: Path) -> None:
    path = write_flow("steps:\n  - {name: a, run: 'echo hi; echo X=1 >> \"$FLOWSH_OUTPUT\"'}\n")
    old = os.umask(0o022)
    try:
        assert run_cli("run", str(path)).returncode == 0
    finally:
        os.umask(old)
    runs = home / "runs"
    assert runs.stat().st_mode & 0o777 == 0o700
    # The step's own outputs file is read and removed: it would hold secret values in clear.
    assert not list(runs.rglob("*.out"))
    for p in runs.rglob("*"):
        want = 0o700 if p.is_dir() else 0o600
        assert p.stat().st_mode & 0o777 == want, p


def test_runs_dir_of_an_older_flowsh_is_tightened(
    write_flow: Callable[..., Path], home: Path
) -> None:
    (home / "runs").mkdir(mode=0o755)
    os.chmod(home / "runs", 0o755)
    path = write_flow("steps:\n  - {name: a, run: 'echo hi'}\n")
    assert run_cli("run", str(path)).returncode == 0
    assert (home / "runs").stat().st_mode & 0o777 == 0o700


def test_symlinked_runs_dir_is_refused(
    write_flow: Callable[..., Path], home: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (home / "runs").symlink_to(elsewhere)
    path = write_flow("steps:\n  - {name: a, run: 'echo hi'}\n")
    _one_line_error(run_cli("run", str(path)), 3, "symbolic link")
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_monitor_logs_refuse_to_follow_a_symlink(
    write_flow: Callable[..., Path], tmp_path: Path, kind: str
) -> None:
    target = tmp_path / "target"
    target.write_text("precious\n")
    (tmp_path / f"log.{kind}").symlink_to(target)
    path = write_flow(f"""
        monitor:
          {kind}: log.{kind}
        steps:
          - {{name: a, run: 'echo hi'}}
    """)
    res = run_cli("run", str(path))
    assert res.returncode == 0
    assert "is a symbolic link; flowsh does not follow it" in res.stderr
    assert target.read_text() == "precious\n"


def test_logs_piped_prints_each_header_before_its_output(
    write_flow: Callable[..., Path], home: Path
) -> None:
    path = write_flow("""
        steps:
          - {name: one, run: 'echo first'}
          - {name: two, needs: [one], run: 'echo second'}
    """)
    assert run_cli("run", str(path)).returncode == 0
    (run_id,) = _run_ids(home)
    # stdout is a pipe, as with `| less`, and block-buffered (PYTHONUNBUFFERED would hide
    # the bug: with it, text and bytes reach the pipe in the order written).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    res = subprocess.run([sys.executable, "-m", "flowsh", "logs", run_id], env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.stdout == "==> one <==\nfirst\n==> two <==\nsecond\n"


@pytest.mark.parametrize(("line", "key", "why"), [
    ("timeout: .nan", "timeout", "not a number"),
    ("timeout: .inf", "timeout", "at most 365d"),
    ("timeout: 99999999999999999999w", "timeout", "at most 365d"),
    ("retry_delay: 366d", "retry_delay", "at most 365d"),
    ("retries: 100000000000000000000000", "retries", "1000"),
    ("retries: 1001", "retries", "1000"),
    ("backoff: .inf", "backoff", "100"),
    ("shell: ''", "shell", "blank"),
    ("shell: '   '", "shell", "blank"),
])
def test_unbounded_or_blank_values_are_refused_with_file_and_line(
    write_flow: Callable[..., Path], line: str, key: str, why: str
) -> None:
    path = write_flow(f"""
        steps:
          - name: a
            run: echo hi
            {line}
    """)
    for cmd in ("validate", "run"):
        res = run_cli(cmd, str(path))
        _one_line_error(res, 2, f"{path}:4:", f"key '{key}'", why)


def test_concurrency_is_bounded(write_flow: Callable[..., Path]) -> None:
    path = write_flow("concurrency: 10001\nsteps:\n  - {name: a, run: echo}\n")
    _one_line_error(run_cli("validate", str(path)), 2, f"{path}:1:", "concurrency", "10000")


# rt11 #15: a number out of range (NaN, Infinity, 1e300, a 2**40 pid) passes a type check and
# became a traceback far away (localtime's OverflowError, a zero-width report timeline).
SQL_GARBAGE = [
    ("runs", "started_at", 1e300), ("runs", "ended_at", float("inf")),
    ("runs", "heartbeat", -5.0), ("runs", "pid", 2**40), ("runs", "exit_code", 2**40),
    ("steps", "started_at", float("-inf")), ("steps", "ended_at", 1e300),
    ("steps", "attempts", -1), ("steps", "signal", 2**62), ("steps", "pid", 0),
]


@pytest.mark.parametrize(("table", "column", "value"), SQL_GARBAGE,
                         ids=[f"{t}.{c}={v}" for t, c, v in SQL_GARBAGE])
def test_out_of_range_number_in_a_sqlite_row_is_exit_3(
    write_flow: Callable[..., Path], home: Path, table: str, column: str, value: object
) -> None:
    path = write_flow("steps:\n  - {name: a, run: 'true'}\n")
    assert run_cli("run", str(path)).returncode == 0
    (rid,) = _run_ids(home)
    db = sqlite3.connect(home / "flowsh.db")
    db.execute(f"UPDATE {table} SET {column} = ?", (value,))
    db.commit()
    db.close()
    for args in (["status"], ["history"], ["report", rid, "-o", str(home / "r.html")]):
        if table == "steps" and args[0] == "history":
            continue  # it reads run rows only
        _one_line_error(run_cli(*args), 3, rid, "corrupt record", f"field {column!r}")


JSON_GARBAGE = [
    ('"started_at": NaN', None), ('"started_at": 1e300', None), ('"ended_at": Infinity', None),
    ('"heartbeat": -Infinity', None), ('"exit_code": 1e400', None),
    ('"attempts": 1.5', "a"), ('"started_at": NaN', "a"), ('"signal": 99999999999999999999', "a"),
]


@pytest.mark.parametrize(("field", "step"), JSON_GARBAGE,
                         ids=[f"{f}{'@' + s if s else ''}" for f, s in JSON_GARBAGE])
def test_out_of_range_number_in_a_json_record_is_exit_3(
    write_flow: Callable[..., Path], tmp_path: Path, field: str, step: str | None
) -> None:
    state = f"json://{tmp_path / 'state'}"
    path = write_flow("steps:\n  - {name: a, run: 'true'}\n")
    assert run_cli("run", str(path), "--state", state).returncode == 0
    (file,) = (tmp_path / "state").glob("state_*.json")
    data = json.loads(file.read_text())
    key = field.split(":")[0].strip('"')
    (data["steps"][step] if step else data)[key] = "@@"
    file.write_text(json.dumps(data).replace('"@@"', field.split(": ")[1]))
    rid = data["run_id"]
    for args in (["status"], ["history"], ["report", rid, "-o", str(tmp_path / "r.html")]):
        _one_line_error(run_cli(*args, "--state", state), 3, file.name, "malformed run record",
                        f"field {key!r}")


def test_report_survives_garbage_attempts_in_the_event_log(
    write_flow: Callable[..., Path], home: Path, tmp_path: Path
) -> None:
    path = write_flow("monitor: {jsonl: true}\nsteps:\n  - {name: a, run: 'true'}\n")
    assert run_cli("run", str(path)).returncode == 0
    (rid,) = _run_ids(home)
    events = home / "logs" / "events.jsonl"
    lines = events.read_text().splitlines()
    bad = [ln.replace('"attempt":1', f'"attempt":{v}') for v in ('"x"', "NaN", "1e300", "[1]")
           for ln in lines if '"step_started"' in ln]
    events.write_text("\n".join([*bad, *lines]) + "\n")
    res = run_cli("report", rid, "-o", str(tmp_path / "r.html"))
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr




def _poll(cond: Callable[[], bool], seconds: float = 30.0) -> None:
    end = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize("scheme", ["sqlite", "json"])
def test_status_and_history_answer_on_a_full_disk_after_a_crash(
    write_flow: Callable[..., Path], tmp_path: Path, tiny_disk: Path, scheme: str
) -> None:
    """rt11 #9: a dead runner's run is shown `crashed` with a warning, not exit 3."""
    state = (f"sqlite:///{tiny_disk / 'flowsh.db'}" if scheme == "sqlite"
             else f"json://{tiny_disk / 'st'}")
    env = {"FLOWSH_HOME": str(tiny_disk / "home"), "FLOWSH_STATE": state}
    path = write_flow("steps: [{name: a, run: 'echo go > started; exec sleep 60'}]")
    proc = subprocess.Popen([sys.executable, "-m", "flowsh", "run", "-q", str(path)],
                            env={**os.environ, **env})
    group: list[int] = []
    try:
        _poll(lambda: (tmp_path / "started").exists())
        running = json.loads(run_cli("status", "--json", env=env).stdout)
        assert running["status"] == "running"
        group.append(running["steps"]["a"]["pid"])
        fill_disk(tiny_disk)
        proc.kill()
        proc.wait()
        for args in (["status"], ["history"]):
            res = run_cli(*args, env=env)
            assert res.returncode == 0, res.stderr
            assert "crashed" in res.stdout and "Traceback" not in res.stderr
            assert "No space left on device" in res.stderr
            assert f"run {running['run_id']} is shown crashed" in res.stderr
        res = run_cli("status", "--json", env=env)
        assert json.loads(res.stdout)["steps"]["a"]["status"] == "interrupted"
        (tiny_disk / "filler").unlink()
        res = run_cli("status", env=env)  # room again: now it is recorded
        assert res.returncode == 0 and "warning" not in res.stderr, res.stderr
        res = run_cli("status", env=env)
        assert "crashed" in res.stdout and "warning" not in res.stderr
    finally:
        proc.kill()
        proc.wait()
        for pgid in group:  # the orphaned step (its own process group)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)


FILL_LOG = r"""
steps:
  - name: fill
    run: head -c 600000 /dev/zero | tr '\0' x; echo; echo done > filled
  - name: after
    needs: [fill]
    run: echo after > ran-after
"""


def test_a_full_disk_under_a_step_log_is_a_warning_and_the_run_goes_on(
    write_flow: Callable[..., Path], tmp_path: Path, tiny_disk: Path
) -> None:
    """rt11 #8: the log's disk is full, the store's is not: the step and the run go on."""
    env = {"FLOWSH_HOME": str(tiny_disk), "FLOWSH_STATE": f"sqlite:///{tmp_path / 'f.db'}"}
    path = write_flow(FILL_LOG)
    res = run_cli("run", str(path), env=env)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    warned = [ln for ln in res.stderr.splitlines() if "fill.log" in ln]
    assert len(warned) == 1 and warned[0].startswith("flowsh: warning: cannot write log ")
    assert "No space left on device" in warned[0]
    assert (tmp_path / "filled").exists() and (tmp_path / "ran-after").exists()
    st = json.loads(run_cli("status", "--json", env=env).stdout)
    assert st["status"] == "succeeded" and st["steps"]["after"]["status"] == "succeeded"


def test_a_full_disk_under_log_and_store_ends_the_run_with_exit_3(
    write_flow: Callable[..., Path], tmp_path: Path, tiny_disk: Path
) -> None:
    """rt11 #8: the log write is a warning naming the log; the state write that follows
    fails as documented (exit 3, the previous record intact), not `No space left` exit 1."""
    env = {"FLOWSH_HOME": str(tiny_disk)}
    path = write_flow(FILL_LOG)
    res = run_cli("run", str(path), env=env)
    assert "Traceback" not in res.stderr
    assert any(ln.startswith("flowsh: warning: cannot write log ") and "fill.log" in ln
               for ln in res.stderr.splitlines()), res.stderr
    _one_line_error(res, 3, "cannot write state: No space left on device; "
                            "the previous record is intact")
    assert not (tmp_path / "ran-after").exists()


@pytest.mark.parametrize("linked", ["logs", "metrics", "logs/sub"])
def test_a_symlinked_directory_under_home_is_not_followed_by_monitor_files(
    write_flow: Callable[..., Path], home: Path, tmp_path: Path, linked: str
) -> None:
    """rt11 #10: a link one directory up from the CSV/JSONL log or the .prom file was
    followed; now each is refused with a warning naming the link, and the run goes on."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "workflow_logs.csv").write_text("timestamp,workflow_id,step,status,message\n")
    link = home / linked
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(victim)
    logs = "logs" if linked == "metrics" else linked
    path = write_flow(f"""
        monitor:
          csv: {home}/{logs}/workflow_logs.csv
          jsonl: {home}/{logs}/events.jsonl
          prometheus: {home}/{linked}
        steps:
          - {{name: a, run: 'echo hi'}}
    """)
    res = run_cli("run", str(path))
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    refused = [ln for ln in res.stderr.splitlines()
               if f"{link}: is a symbolic link; flowsh does not follow" in ln]
    assert refused and all(ln.startswith("flowsh: warning: ") for ln in refused), res.stderr
    assert sorted(p.name for p in victim.iterdir()) == ["workflow_logs.csv"]
    assert (victim / "workflow_logs.csv").read_text().count("\n") == 1


def test_monitor_files_in_a_real_directory_under_home_still_work(
    write_flow: Callable[..., Path], home: Path
) -> None:
    path = write_flow("""
        monitor: {csv: true, jsonl: true, prometheus: true}
        steps:
          - {name: a, run: 'echo hi'}
    """)
    res = run_cli("run", str(path))
    assert res.returncode == 0 and "warning" not in res.stderr, res.stderr
    assert (home / "logs" / "workflow_logs.csv").read_text().count("\n") == 5
    assert (home / "logs" / "events.jsonl").exists()
    assert list((home / "metrics").glob("flowsh_*.prom"))


@pytest.mark.parametrize("name", ["flowsh.db", "flowsh.db-wal", "alerts.log", "logs"])
def test_other_files_under_home_refuse_a_link(
    write_flow: Callable[..., Path], home: Path, tmp_path: Path, name: str
) -> None:
    """rt11 #10: every file flowsh writes under $FLOWSH_HOME: the database (and its WAL),
    the default alerts.log, the `logs/` directory `plugins install` keeps pip.log in."""
    victim = tmp_path / "victim"
    if name == "logs":
        victim.mkdir()
    else:
        victim.write_text("precious\n")
    (home / name).symlink_to(victim)
    path = write_flow("notify: {channels: {ops: {type: log}}}\n"
                      "steps:\n  - {name: a, run: 'exit 1'}\n")
    res = run_cli("run", str(path))
    assert "Traceback" not in res.stderr
    if name.startswith("flowsh.db"):
        _one_line_error(res, 3, f"{home / name}: is a symbolic link")
    else:
        assert res.returncode == 1, res.stderr
    if name == "alerts.log":
        assert "warning: notify channel 'ops'" in res.stderr and "alerts.log" in res.stderr
    if name == "logs":
        assert list(victim.iterdir()) == []
    else:
        assert victim.read_text() == "precious\n"
