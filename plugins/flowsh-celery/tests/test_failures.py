"""Failure paths with real parts: several real workers (each in a directory of its own,
standing for a host), real Redis and RabbitMQ, real signals. Each test failed before the
attempt protocol (flowsh_celery.app) existed.

A step proves "never two attempts at once" itself: it takes an flock on a shared file
(held by every process of the attempt, released only when the last one dies) and writes
OVERLAP to its trace when another attempt still holds it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import REDIS, Cluster, flowsh

RABBIT = os.environ.get("FLOWSH_CELERY_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672//")


def status(run_id: str | None = None) -> dict:
    res = flowsh("status", *([run_id] if run_id else []), "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def wait_for(cond, what: str, limit: float = 30.0) -> float:
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > limit:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - start


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def traced(tmp_path: Path, body: str) -> str:
    """Shell text: take the attempt lock (OVERLAP if another attempt holds it), trace."""
    return (f"exec 9>>{tmp_path}/attempt.lock\n"
            f"flock -n 9 || echo OVERLAP >> {tmp_path}/trace\n"
            f'echo "start $FLOWSH_ATTEMPT $CELERY_WORKER $$" >> {tmp_path}/trace\n'
            f"{body}\n"
            f'echo "end $FLOWSH_ATTEMPT" >> {tmp_path}/trace\n')


def trace(tmp_path: Path) -> list[str]:
    path = tmp_path / "trace"
    return path.read_text().splitlines() if path.exists() else []


def flow_file(tmp_path: Path, text: str) -> Path:
    import textwrap

    path = tmp_path / "flow.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def run_bg(flow: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "flowsh", "run", str(flow), "--quiet",
                             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def block(text: str, indent: int = 6) -> str:
    pad = " " * indent
    return "|\n" + "\n".join(pad + line for line in text.splitlines())


def test_attempt_records_task_worker_queue_and_times(cluster: Cluster, tmp_path: Path,
                                                     flowsh_env):
    q = f"rec-{uuid.uuid4().hex[:6]}"
    w = cluster.start("hostA", [q])
    flow = flow_file(tmp_path, f"""
        name: rec
        executor: celery
        executor_options: {{queue: {q}}}
        steps:
          - {{name: a, run: 'sleep 0.3'}}
        """)
    res = flowsh("run", str(flow), "--quiet")
    assert res.returncode == 0, res.stderr
    step = status()["steps"]["a"]
    assert step["worker"] == w.name and step["queue"] == q
    assert len(step["task_id"]) == 32
    assert step["queued_at"] <= step["started_at"] < step["ended_at"]
    # The duration is the run time on the worker, not the wait in the queue.
    assert 0.3 <= step["ended_at"] - step["started_at"] < 2.0
    text = flowsh("status").stdout
    assert f"on {w.name} via {q}, queued " in text
    report = tmp_path / "report.html"
    res = flowsh("report", status()["run_id"], "-o", str(report))
    assert res.returncode == 0, res.stderr
    assert f"on {w.name} via {q}, queued " in report.read_text()


def test_step_queue_routes_to_the_host_group(cluster: Cluster, tmp_path: Path, flowsh_env):
    tag = uuid.uuid4().hex[:6]
    a = cluster.start("web1", [f"web-{tag}"])
    b = cluster.start("db1", [f"db-{tag}"])
    flow = flow_file(tmp_path, f"""
        name: routed
        executor: celery
        executor_options: {{queue: web-{tag}}}
        steps:
          - {{name: front, run: 'echo $CELERY_WORKER > {tmp_path}/front'}}
          - {{name: dump, queue: db-{tag}, run: 'echo $CELERY_WORKER > {tmp_path}/dump'}}
        """)
    res = flowsh("run", str(flow), "--quiet")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "front").read_text().strip() == a.name
    assert (tmp_path / "dump").read_text().strip() == b.name
    assert status()["steps"]["dump"]["queue"] == f"db-{tag}"


def test_a_queue_nobody_consumes_is_an_error_not_a_hang(cluster: Cluster, tmp_path: Path,
                                                        flowsh_env):
    tag = uuid.uuid4().hex[:6]
    w = cluster.start("hostA", [f"other-{tag}"])
    flow = flow_file(tmp_path, f"""
        name: nobody
        executor: celery
        steps:
          - {{name: a, queue: nobody-{tag}, run: 'true'}}
        """)
    started = time.monotonic()
    res = flowsh("run", str(flow), "--quiet")
    assert res.returncode == 1 and time.monotonic() - started < 15
    msg = status()["steps"]["a"]["message"]
    assert msg.startswith(f"no celery worker consumes queue 'nobody-{tag}' on broker "
                          f"{REDIS} with result backend {REDIS}; workers there:"), msg
    assert f"{w.name} (queues other-{tag})" in msg


def test_queue_timeout_fails_an_untaken_step_and_it_never_runs_later(
        cluster: Cluster, tmp_path: Path, flowsh_env):
    tag = uuid.uuid4().hex[:6]
    flow = flow_file(tmp_path, f"""
        name: untaken
        executor: celery
        executor_options: {{check_workers: false}}
        queue_timeout: 2s
        steps:
          - {{name: a, queue: late-{tag}, run: 'echo ran > {tmp_path}/ran'}}
        """)
    started = time.monotonic()
    res = flowsh("run", str(flow), "--quiet")
    took = time.monotonic() - started
    assert res.returncode == 1 and 2 <= took < 10, (res.stderr, took)
    step = status()["steps"]["a"]
    assert step["exit_code"] == 124
    assert step["message"] == (f"no worker started step 'a' within its queue_timeout (2s) "
                               f"on celery queue 'late-{tag}'; it will not run")
    # The given-up task is taken off the broker's list (it holds the step's environment):
    # a worker that comes up later finds nothing to run (were it there, it would be
    # discarded as expired, or refused by the claim).
    import redis

    r = redis.Redis.from_url(REDIS)
    assert r.llen(f"late-{tag}") == 0
    r.close()
    cluster.start("late", [f"late-{tag}"])
    assert not (tmp_path / "ran").exists()


def test_a_backend_mismatch_is_reported_not_a_hang(cluster: Cluster, tmp_path: Path,
                                                   flowsh_env):
    tag = uuid.uuid4().hex[:6]
    other = REDIS.rsplit("/", 1)[0] + "/9"
    cluster.start("elsewhere", [f"mm-{tag}"], backend=other)
    flow = flow_file(tmp_path, f"""
        name: mismatch
        executor: celery
        executor_options: {{queue: mm-{tag}}}
        steps: [{{name: a, run: 'true'}}]
        """)
    res = flowsh("run", str(flow), "--quiet", timeout=30)
    assert res.returncode == 1
    msg = status()["steps"]["a"]["message"]
    assert msg.startswith(f"no celery worker consumes queue 'mm-{tag}' on broker {REDIS} "
                          f"with result backend {REDIS}"), msg


def test_killed_pool_process_stops_the_step_and_the_retry_never_overlaps(
        cluster: Cluster, tmp_path: Path, flowsh_env):
    tag = uuid.uuid4().hex[:6]
    cluster.start("hostA", [f"k-{tag}"])
    cluster.start("hostB", [f"k-{tag}"])
    body = f"""if [ "$FLOWSH_ATTEMPT" = 1 ]; then echo "$PPID $$" > {tmp_path}/pool.pid; sleep 300; fi"""
    flow = flow_file(tmp_path, f"""
        name: poolkill
        executor: celery
        executor_options: {{queue: k-{tag}}}
        steps:
          - name: s
            retries: 1
            retry_delay: 0.1s
            run: {block(traced(tmp_path, body), 14)}
        """)
    proc = run_bg(flow)
    pid_file = tmp_path / "pool.pid"
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), "the step to start")
    pool, shell = map(int, pid_file.read_text().split())
    os.kill(pool, signal.SIGKILL)
    killed = time.monotonic()
    stopped_in = wait_for(lambda: not alive(shell), "the supervisor to stop the orphaned step",
                          10)
    retry_in = wait_for(lambda: any(ln.startswith("start 2") for ln in trace(tmp_path)),
                        "the retry to start", 30)
    print(f"\nFIGURE pool kill -9 -> step stopped after {stopped_in:.2f}s, retry started "
          f"{stopped_in + retry_in:.2f}s after the kill")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    lines = trace(tmp_path)
    assert "OVERLAP" not in lines and lines[-1] == "end 2", lines
    step = status()["steps"]["s"]
    log = Path(step["log_path"]).read_text()
    assert step["attempts"] == 2 and "pool process on worker" in log and "died" in log, log
    assert time.monotonic() - killed < 30


def test_killed_worker_main_process_is_detected_and_retried(cluster: Cluster,
                                                           tmp_path: Path, flowsh_env):
    tag = uuid.uuid4().hex[:6]
    a = cluster.start("hostA", [f"m-{tag}"])
    body = f"""if [ "$FLOWSH_ATTEMPT" = 1 ]; then echo $$ > {tmp_path}/shell.pid; sleep 300; fi"""
    flow = flow_file(tmp_path, f"""
        name: mainkill
        executor: celery
        executor_options: {{queue: m-{tag}, lost_after: 4}}
        steps:
          - name: s
            retries: 1
            retry_delay: 0.1s
            run: {block(traced(tmp_path, body), 14)}
        """)
    proc = run_bg(flow)
    pid_file = tmp_path / "shell.pid"
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), "the step to start")
    pools = a.pool_pids()
    os.kill(a.proc.pid, signal.SIGKILL)  # the worker's main process only
    cluster.start("hostB", [f"m-{tag}"])
    shell = int(pid_file.read_text())
    # Its pool process either finishes the attempt or is gone with it: in both cases
    # the retry must not overlap a live first attempt.
    _, err = proc.communicate(timeout=120)
    assert "OVERLAP" not in trace(tmp_path), trace(tmp_path)
    assert proc.returncode == 0, err
    assert not alive(shell)
    for pid in pools:
        wait_for(lambda pid=pid: not alive(pid), "the orphaned pool process to exit", 15)


def test_stopped_worker_is_declared_lost_within_lost_after(cluster: Cluster,
                                                          tmp_path: Path, flowsh_env):
    tag = uuid.uuid4().hex[:6]
    a = cluster.start("hostA", [f"s-{tag}"])
    body = f"""if [ "$FLOWSH_ATTEMPT" = 1 ]; then echo $$ > {tmp_path}/shell.pid; sleep 300; fi"""
    # The default lost_after (10 s): "worker loss detected in <= 15 s".
    flow = flow_file(tmp_path, f"""
        name: stopped
        executor: celery
        executor_options: {{queue: s-{tag}}}
        steps:
          - name: s
            retries: 1
            retry_delay: 0.1s
            run: {block(traced(tmp_path, body), 14)}
        """)
    proc = run_bg(flow)
    pid_file = tmp_path / "shell.pid"
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), "the step to start")
    cluster.start("hostB", [f"s-{tag}"])
    group = [a.proc.pid, *a.pool_pids()]
    for pid in group:
        os.kill(pid, signal.SIGSTOP)  # the whole worker hangs (the supervisor does not)
    stopped = time.monotonic()
    shell = int(pid_file.read_text())
    wait_for(lambda: not alive(shell), "the supervisor to stop the stalled step", 15)
    wait_for(lambda: any(ln.startswith("start 2") for ln in trace(tmp_path)),
             "the retry to start", 20)
    detected = time.monotonic() - stopped
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert detected <= 15, detected
    print(f"\nFIGURE worker SIGSTOP -> retry started after {detected:.1f}s")
    assert "OVERLAP" not in trace(tmp_path)
    log = Path(status()["steps"]["s"]["log_path"]).read_text()
    assert "stopped answering" in log or "lost: no heartbeat" in log, log
    for pid in group:
        os.kill(pid, signal.SIGCONT)
    # Woken up, the stalled worker does not run the attempt again.
    time.sleep(0)  # nothing to wait for: the trace is final once the run ended
    assert [ln for ln in trace(tmp_path) if ln.startswith("start")].__len__() == 2


def test_tasks_of_an_interrupted_run_never_run_later(cluster: Cluster, tmp_path: Path,
                                                     flowsh_env):
    tag = uuid.uuid4().hex[:6]
    w = cluster.start("hostA", [f"i-{tag}"])
    flow = flow_file(tmp_path, f"""
        name: abandoned
        executor: celery
        executor_options: {{queue: i-{tag}}}
        concurrency: 4
        kill_grace: 0.2s
        steps:
          - {{name: a, needs: [], run: 'echo a >> {tmp_path}/ran; sleep 300'}}
          - {{name: b, needs: [], run: 'echo b >> {tmp_path}/ran; sleep 300'}}
          - {{name: c, needs: [], run: 'echo c >> {tmp_path}/ran; sleep 300'}}
          - {{name: d, needs: [], run: 'echo d >> {tmp_path}/ran; sleep 300'}}
        """)
    proc = run_bg(flow)
    ran = tmp_path / "ran"
    wait_for(lambda: ran.exists() and ran.read_text().strip(), "one step to start")
    # One worker process: three tasks wait in the broker. Stop the worker hard (it takes
    # no revoke), interrupt the run, then bring a worker back: nothing more may run.
    w.proc.send_signal(signal.SIGSTOP)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    os.killpg(w.proc.pid, signal.SIGKILL)
    os.kill(w.proc.pid, signal.SIGCONT)
    w.proc.wait()
    # Tasks still in the queue's list were taken off it by the interrupt (nothing can run
    # them); those the stopped worker had reserved are in kombu's `unacked`.
    import redis

    r = redis.Redis.from_url(REDIS)
    left = r.llen(f"i-{tag}") + sum(f"i-{tag}".encode() in v for v in r.hvals("unacked"))
    r.close()
    assert left >= 1
    # The task the stopped worker had reserved sits in Redis's `unacked` until the
    # visibility timeout (made short here through the transport options, with kombu's
    # sweep for such messages every second rather than every 100 s) brings it back.
    w2 = cluster.start("hostB", [f"i-{tag}"], concurrency=4, env={
        "FLOWSH_CELERY_TRANSPORT_OPTIONS": '{"visibility_timeout": 3, '
        '"unacked_restore_interval": 1, "unacked_restore_throttle": 1}'})
    wait_for(lambda: w2.log.read_text().count("not running task") >= left,
             "the new worker to refuse the abandoned tasks left in the broker", 60)
    assert len(ran.read_text().split()) == 1


def test_rabbitmq_broker_runs_and_records(cluster: Cluster, tmp_path: Path, flowsh_env,
                                          monkeypatch):
    tag = uuid.uuid4().hex[:6]
    w = cluster.start("rabbit", [f"r-{tag}"], broker=RABBIT, backend=REDIS)
    monkeypatch.setenv("FLOWSH_CELERY_BROKER", RABBIT)
    monkeypatch.setenv("FLOWSH_CELERY_BACKEND", REDIS)
    flow = flow_file(tmp_path, f"""
        name: rabbit
        executor: celery
        executor_options: {{queue: r-{tag}}}
        steps:
          - {{name: a, run: 'echo X=1 >> $FLOWSH_OUTPUT'}}
          - {{name: b, run: 'test "$X" = 1'}}
        """)
    res = flowsh("run", str(flow), "--quiet")
    assert res.returncode == 0, res.stderr
    assert status()["steps"]["b"]["worker"] == w.name


TRIALS = int(os.environ.get("FLOWSH_KILL_TRIALS", "3"))


@pytest.mark.parametrize("trial", range(TRIALS))
def test_coordinator_kill_then_resume_never_overlaps(cluster: Cluster, tmp_path: Path,
                                                     flowsh_env, trial: int):
    """kill -9 of `flowsh run` at a random moment (before submission, queued, running),
    then `flowsh resume`: the step's attempts never overlap, and it ends succeeded."""
    tag = uuid.uuid4().hex[:6]
    cluster.start("hostA", [f"c-{tag}"])
    cluster.start("hostB", [f"c-{tag}"])
    flow = flow_file(tmp_path, f"""
        name: coordkill
        executor: celery
        executor_options: {{queue: c-{tag}}}
        kill_grace: 0.5s
        steps:
          - name: s
            run: {block(traced(tmp_path, "sleep 2"), 14)}
        """)
    proc = run_bg(flow)

    def recorded() -> str | None:
        res = flowsh("history", "--json")
        runs = json.loads(res.stdout) if res.returncode == 0 and res.stdout.strip() else []
        return runs[0]["run_id"] if runs else None

    wait_for(lambda: recorded() is not None, "the run to be recorded")
    run_id = recorded()
    assert run_id is not None
    # The moment of the crash is the test's input: before the step is submitted, while
    # it is queued, while it runs on a worker, or as it ends.
    time.sleep(random.uniform(0.0, 2.5))
    proc.kill()
    proc.wait()
    if status(run_id)["status"] != "succeeded":
        res = flowsh("resume", run_id, "--quiet", timeout=120)
        assert res.returncode == 0, (res.stderr, trace(tmp_path))
    lines = trace(tmp_path)
    assert "OVERLAP" not in lines, lines
    assert lines[-1].startswith("end"), lines
    assert status(run_id)["status"] == "succeeded"
