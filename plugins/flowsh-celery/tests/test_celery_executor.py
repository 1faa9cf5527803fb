"""`executor: celery` end to end: flowsh CLI -> Redis -> a real Celery worker -> bash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Worker, flowsh

from flowsh_celery.worker import _tail, run_request


def status(home: Path) -> dict:
    res = flowsh("status", "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def wait_for(cond, what: str, limit: float = 15.0) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """Running, and not a zombie: in a container nothing may reap an orphan's remains."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_diamond_runs_on_the_worker_and_passes_outputs(celery_env: Worker, write_flow,
                                                       tmp_path, flowsh_env):
    flow = write_flow(f"""
        name: diamond
        executor: celery
        kill_grace: 0.2s
        steps:
          - name: a
            run: |
              echo "$CELERY_WORKER $PPID" > {tmp_path}/a.where
              echo "X=from-a" >> "$FLOWSH_OUTPUT"
              echo "a says hello"
          - {{name: b, needs: [a], run: 'echo "$CELERY_WORKER $PPID" > {tmp_path}/b.where; echo "Y=$X-b" >> "$FLOWSH_OUTPUT"'}}
          - {{name: c, needs: [a], run: 'echo "$CELERY_WORKER $PPID" > {tmp_path}/c.where; echo "Z=$X-c" >> "$FLOWSH_OUTPUT"'}}
          - {{name: d, needs: [b, c], run: 'echo "$CELERY_WORKER $PPID" > {tmp_path}/d.where; echo "got $X $Y $Z" | tee {tmp_path}/d.txt; pwd'}}
        """)
    proc = subprocess.Popen([sys.executable, "-m", "flowsh", "run", str(flow), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    pools = celery_env.pool_pids()
    for step in "abcd":
        worker, pid = (tmp_path / f"{step}.where").read_text().split()
        assert worker == celery_env.name
        assert int(pid) in pools and int(pid) != proc.pid
    assert (tmp_path / "d.txt").read_text() == "got from-a from-a-b from-a-c\n"
    run = status(flowsh_env)
    assert run["status"] == "succeeded"
    assert run["steps"]["c"]["outputs"] == {"Z": "from-a-c"}
    # The worker's output lands in the local log file, which `flowsh logs` reads.
    logs = Path(run["steps"]["d"]["log_path"]).read_text()
    assert logs == f"got from-a from-a-b from-a-c\n{tmp_path}\n"
    assert oct(os.stat(run["steps"]["a"]["log_path"]).st_mode & 0o777) == "0o600"
    assert "a says hello" in flowsh("logs", run["run_id"], "a").stdout


def test_failing_step_fails_the_run_with_its_exit_code(celery_env, write_flow, flowsh_env):
    flow = write_flow("""
        name: failing
        executor: celery
        steps:
          - {name: ok, run: 'true'}
          - {name: bad, run: 'echo "disk full" >&2; exit 3'}
          - {name: after, run: 'echo never'}
        """)
    res = flowsh("run", str(flow), "--quiet")
    assert res.returncode == 1, res.stderr
    run = status(flowsh_env)
    assert run["status"] == "failed"
    assert run["steps"]["bad"]["exit_code"] == 3
    assert run["steps"]["bad"]["status"] == "failed"
    assert run["steps"]["after"]["status"] == "skipped"
    assert Path(run["steps"]["bad"]["log_path"]).read_text() == "disk full\n"


def test_timeout_gives_124_and_kills_the_steps_group_on_the_worker(
        celery_env, write_flow, tmp_path, flowsh_env):
    flow = write_flow(f"""
        name: slow
        executor: celery
        kill_grace: 0.2s
        steps:
          - name: slow
            timeout: 4s  # time for a loaded machine to start bash and write the pids
            run: |
              sleep 300 &
              echo $! > {tmp_path}/child.pid
              echo $$ > {tmp_path}/shell.pid
              wait
        """)
    res = flowsh("run", str(flow), "--quiet")
    assert res.returncode == 1, res.stderr
    step = status(flowsh_env)["steps"]["slow"]
    assert step["exit_code"] == 124 and step["message"] == "timed out"
    for name in ("child.pid", "shell.pid"):
        pid = int((tmp_path / name).read_text())
        wait_for(lambda pid=pid: not alive(pid), f"{name} {pid} to be killed")


def test_retry_policy_runs_the_step_again_on_the_worker(celery_env, write_flow, tmp_path,
                                                        flowsh_env):
    flow = write_flow(f"""
        name: flaky
        executor: celery
        steps:
          - name: flaky
            retries: 2
            retry_delay: 0.1s
            run: |
              echo "attempt $FLOWSH_ATTEMPT on $CELERY_WORKER" >> {tmp_path}/attempts
              echo "try $FLOWSH_ATTEMPT"
              [ "$FLOWSH_ATTEMPT" -ge 2 ] || exit 9
              echo "DONE=yes" >> "$FLOWSH_OUTPUT"
        """)
    res = flowsh("run", str(flow), "--quiet")
    assert res.returncode == 0, res.stderr
    w = celery_env.name
    assert (tmp_path / "attempts").read_text() == f"attempt 1 on {w}\nattempt 2 on {w}\n"
    step = status(flowsh_env)["steps"]["flaky"]
    assert step["attempts"] == 2 and step["outputs"] == {"DONE": "yes"}
    assert Path(step["log_path"]).read_text() == "try 1\n--- flowsh: attempt 2 ---\ntry 2\n"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupting_flowsh_revokes_the_running_task(celery_env, write_flow, tmp_path,
                                                      flowsh_env, sig):
    flow = write_flow(f"""
        name: long
        executor: celery
        kill_grace: 0.2s
        steps:
          - name: long
            run: |
              trap 'echo "TERM on worker" > {tmp_path}/trapped; exit 7' TERM
              echo $$ > {tmp_path}/shell.pid
              sleep 300 &
              wait
          - {{name: next, run: 'echo never > {tmp_path}/next'}}
        """)
    proc = subprocess.Popen([sys.executable, "-m", "flowsh", "run", str(flow), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid_file = tmp_path / "shell.pid"
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), "the step to start")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    shell = int(pid_file.read_text())
    wait_for(lambda: not alive(shell), "the step's shell to stop")
    assert (tmp_path / "trapped").read_text() == "TERM on worker\n"
    assert not (tmp_path / "next").exists()
    run = status(flowsh_env)
    assert run["status"] == "interrupted" and run["exit_code"] == 130
    assert run["steps"]["long"]["status"] == "interrupted"


def test_secrets_are_masked_before_they_leave_the_worker(celery_env, write_flow, flowsh_env):
    flow = write_flow("""
        name: masked
        executor: celery
        env: {DB_PASSWORD: hunter2-very-secret}
        steps:
          - {name: leak, run: 'echo "pw=$DB_PASSWORD"'}
        """)
    res = flowsh("run", str(flow))
    assert res.returncode == 0, res.stderr
    assert "pw=***" in res.stdout and "hunter2" not in res.stdout
    step = status(flowsh_env)["steps"]["leak"]
    assert Path(step["log_path"]).read_text() == "pw=***\n"
    log = celery_env.log.read_text()
    assert "hunter2" not in log


def test_the_worker_log_holds_no_step_output_nor_outputs(celery_env, write_flow, flowsh_env):
    # API_TOKEN is secret by its name, but only once the step has written it: the worker
    # cannot mask it, so the task's result (output, $FLOWSH_OUTPUT) stays out of its log.
    flow = write_flow("""
        name: quiet
        executor: celery
        steps:
          - {name: make, run: 'echo "API_TOKEN=tok-quiet-42" >> "$FLOWSH_OUTPUT"; echo shown-nowhere-else'}
          - {name: use, run: 'test "$API_TOKEN" = tok-quiet-42'}
        """)
    before = celery_env.log.read_text().count("succeeded in")
    res = flowsh("run", str(flow))
    assert res.returncode == 0, res.stderr
    wait_for(lambda: celery_env.log.read_text().count("succeeded in") >= before + 2,
             "the worker's lines for both tasks")
    log = celery_env.log.read_text()
    assert "tok-quiet-42" not in log and "shown-nowhere-else" not in log


def test_dead_broker_is_one_clear_line_and_exit_2(write_flow, monkeypatch):
    monkeypatch.setenv("FLOWSH_CELERY_BROKER", "redis://127.0.0.1:1/5")
    flow = write_flow("""
        name: nobroker
        executor: celery
        steps: [{name: a, run: 'true'}]
        """)
    res = flowsh("run", str(flow), "--quiet", timeout=30)
    assert res.returncode == 2
    assert res.stderr.splitlines() == [
        "flowsh: error: celery broker redis://127.0.0.1:1/5 unreachable: "
        "ConnectionError: Error 111 connecting to 127.0.0.1:1. Connection refused."]


def test_bad_executor_options_are_usage_errors(write_flow, celery_env):
    flow = write_flow("""
        name: opts
        executor: celery
        executor_options: {queue: q, brokr: redis://x}
        steps: [{name: a, run: 'true'}]
        """)
    res = flowsh("run", str(flow), "--quiet")
    assert res.returncode == 2
    assert res.stderr.splitlines() == [
        f"flowsh: error: {flow}:3:30: executor 'celery': unknown executor_options brokr "
        "(known: broker, backend, queue, connect_timeout, lost_after, queue_timeout, "
        "check_workers, transport_options)"]


def test_missing_directory_on_the_worker_is_reported(tmp_path):
    now = time.time()
    out = run_request({"key": "a", "argv": ["true"], "cwd": str(tmp_path / "nope"),
                       "env": {}, "log_path": "/nonexistent/a.log"}, [], "w1@host")
    assert out["exit_code"] == 127 and out["started_at"] >= now
    assert out["error"] == (f"working directory {tmp_path / 'nope'} does not exist on worker "
                            "w1@host (flowsh-celery needs the workflow's directory at the "
                            "same path)")


def test_output_tail_keeps_whole_lines(tmp_path):
    path = tmp_path / "log"
    path.write_bytes(b"first line\nsecond\nthird\n")
    assert _tail(str(path), 100) == ("first line\nsecond\nthird\n", 0)
    assert _tail(str(path), 10) == ("third\n", 18)


def test_library_state_reaches_the_worker_once_per_run(celery_env: Worker, write_flow,
                                                       tmp_path, flowsh_env):
    """Shared rule 1 on a remote executor: the state travels as FLOWSH_LIBRARY_STATE."""
    (tmp_path / "lib.sh").write_text(
        'STAMP=$(date +%s%N)\nshow() { echo "$STAMP $CELERY_WORKER" >> ' f'{tmp_path}/seen; }}\n'
        'main "$@"\n')
    flow = write_flow("""
        executor: celery
        source: lib.sh
        steps:
          - {name: a, run: show}
          - {name: b, run: show}
        """)
    res = flowsh("run", str(flow), "--quiet")
    assert res.returncode == 0, res.stderr
    lines = (tmp_path / "seen").read_text().splitlines()
    assert len(lines) == 2 and lines[0].split()[0] == lines[1].split()[0]
    assert all(len(line.split()) == 2 for line in lines)  # ran on the worker


def test_missing_script_or_program_on_the_worker_is_reported(tmp_path):
    from flowsh_celery.worker import check_paths

    gone = str(tmp_path / "load.sh")
    base = {"cwd": str(tmp_path), "env": {}}
    assert check_paths({**base, "argv": ["bash", gone, "x"]}, "w1@h") == \
        f"script {gone} does not exist on worker w1@h"
    assert check_paths({**base, "argv": [gone]}, "w1@h") == \
        f"program {gone} does not exist on worker w1@h"
    assert check_paths({**base, "argv": ["/usr/bin/env", "bash", gone]}, "w1@h") == \
        f"script {gone} does not exist on worker w1@h"
    # An executable script's own arguments are its business.
    assert check_paths({**base, "argv": ["/bin/true", gone]}, "w1@h") is None
    # A `run:` step's text after -c is no path, whatever it starts with.
    assert check_paths({**base, "argv": ["bash", "-c", "/not/a/file"]}, "w1@h") is None
    out = run_request({"key": "a", "argv": ["bash", gone], "cwd": str(tmp_path), "env": {},
                       "log_path": "/nonexistent/a.log"}, [], "w1@h")
    assert out["exit_code"] == 127 and out["error"] == f"script {gone} does not exist on worker w1@h"


@pytest.mark.parametrize(("options", "key"), [
    ({"lost_after": -1}, "lost_after"), ({"lost_after": float("inf")}, "lost_after"),
    ({"lost_after": 1}, "lost_after"), ({"queue_timeout": "5m"}, "queue_timeout"),
    ({"brokr": "redis://x"}, "brokr"), ({"queue": 3}, "queue"),
    ({"check_workers": "no"}, "check_workers"), ({"transport_options": 7}, "transport_options"),
])
def test_check_options_names_the_bad_key(options: dict, key: str) -> None:
    """What `flowsh validate` calls: no broker is reached, the error names the option."""
    from flowsh.api import OptionError

    from flowsh_celery.options import check_options

    with pytest.raises(OptionError) as exc:
        check_options(options)
    assert exc.value.key == key and key in str(exc.value)


def test_validate_points_at_the_bad_option(write_flow) -> None:
    flow = write_flow("""
        name: v
        executor: celery
        executor_options:
          broker: redis://127.0.0.1:1/0
          lost_after: .nan
        steps:
          - {name: a, run: 'true'}
        """)
    res = flowsh("validate", str(flow))
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith(f"{flow}:5:3: executor 'celery': executor_options.lost_after")
