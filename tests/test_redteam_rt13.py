"""Red-team reproducers for issue 13 (distributed runs), one test per defect found.

Each test uses real parts only: a Redis server of its own (its own port, killed and
restarted at will; never the machine's shared Redis), real Celery workers of
flowsh-celery (each in a directory of its own, standing for a host), the machine's
PostgreSQL in a schema of the test's own. A step proves "never two attempts at once"
itself: it takes an flock on a shared file and writes OVERLAP to its trace when another
attempt still holds it.

Needs the flowsh-celery plugin installed in this interpreter (pip install -e
plugins/flowsh-celery), redis-server on PATH and PostgreSQL at 127.0.0.1:5432.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.celery_worker import Cluster, descendants
from tests.conftest import PG_SERVER as PG

pytest.importorskip("flowsh_celery")
redis = pytest.importorskip("redis")
if shutil.which("redis-server") is None:
    pytest.skip("no redis-server on PATH", allow_module_level=True)


# -- parts ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A redis-server of the test's own, without persistence: kill -9 and restart freely."""

    def __init__(self, root: Path, password: str | None = None) -> None:
        self.port = _free_port()
        self.root = root
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.root)]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        client = self.client()
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=2)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    d = tmp_path / "redis"
    d.mkdir()
    server = RedisServer(d)
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "hosts")
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def celery_home(flowsh_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FLOWSH_LOAD_ENTRYPOINTS", "1")
    monkeypatch.setenv("FLOWSH_PLUGINS", "celery")
    for var in ("FLOWSH_CELERY_BROKER", "FLOWSH_CELERY_BACKEND", "FLOWSH_CELERY_QUEUE"):
        monkeypatch.delenv(var, raising=False)
    return flowsh_env


# -- helpers --------------------------------------------------------------------------


def wait_for(cond: Callable[[], object], what: str, limit: float = 30.0) -> float:
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > limit:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - start


def flowsh(*args: str, timeout: float = 60,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flowsh", *args], capture_output=True,
                          text=True, timeout=timeout, check=False,
                          env={**os.environ, **(env or {})})


def run_bg(flow: Path, *args: str, env: dict[str, str] | None = None
           ) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "flowsh", "run", str(flow), "--quiet",
                             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **(env or {})})


def flow_file(tmp_path: Path, text: str, name: str = "flow.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def traced(tmp_path: Path, body: str) -> str:
    return (f"exec 9>>{tmp_path}/attempt.lock\n"
            f"flock -n 9 || echo OVERLAP >> {tmp_path}/trace\n"
            f'echo "start $$" >> {tmp_path}/trace\n'
            f"{body}\n"
            f'echo "end $$" >> {tmp_path}/trace\n')


def trace(tmp_path: Path) -> list[str]:
    path = tmp_path / "trace"
    return path.read_text().splitlines() if path.exists() else []


def block(text: str, indent: int) -> str:
    pad = " " * indent
    return "|\n" + "\n".join(pad + line for line in text.splitlines())


def status(run_id: str = "", env: dict[str, str] | None = None) -> dict:
    res = flowsh("status", *([run_id] if run_id else []), "--json", env=env)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def latest_run_id(env: dict[str, str] | None = None) -> str | None:
    res = flowsh("history", "--json", env=env)
    runs = json.loads(res.stdout) if res.returncode == 0 and res.stdout.strip() else []
    return runs[0]["run_id"] if runs else None


# -- Celery: "a mismatched configuration is an error, not a hang" ---------------------------


def test_stopped_worker_leaves_its_queue_looking_served(own_redis: RedisServer,
                                                         cluster: Cluster, tmp_path: Path,
                                                         celery_home: Path):
    """Promise: "a queue with no consumer is an error, not a hang" (docs/distributed-celery.md:
    "No worker on the queue: fails at once").

    Observed: after the queue's only worker was stopped the ordinary way (SIGTERM, warm
    shutdown, as systemctl stop does), its advert `flowsh:worker:NAME` stays in Redis for
    ADVERT_TTL (20 s) and the runner caches "queue served" for 10 s more; a run started in
    that window submits the step and waits the whole queue_timeout (default 5 min; 30 s
    here) for a worker that is gone. Expected: the step fails at once naming the queue
    (a stopping worker withdraws its advert; or the runner asks workers, not a cache)."""
    q = f"gone-{uuid.uuid4().hex[:6]}"
    w = cluster.start("hostA", [q], own_redis.url, own_redis.url)
    w.proc.send_signal(signal.SIGTERM)  # warm shutdown: nothing is running
    w.proc.wait(timeout=30)
    flow = flow_file(tmp_path, f"""
        name: gone
        executor: celery
        executor_options: {{broker: '{own_redis.url}', queue: {q}}}
        queue_timeout: 30s
        steps:
          - {{name: a, run: 'true'}}
        """)
    start = time.monotonic()
    res = flowsh("run", str(flow), "--quiet", timeout=90)
    took = time.monotonic() - start
    assert res.returncode != 0
    assert took < 15, f"the step waited {took:.1f}s for a stopped worker: {res.stderr}"


def test_worker_on_another_broker_is_not_noticed(own_redis: RedisServer, cluster: Cluster,
                                                 tmp_path: Path, celery_home: Path):
    """Promise: "a mismatched configuration is an error, not a hang" (issue 13: the client
    checks that a worker answers on the queue before submitting, or says what it found).

    Observed: a worker that reports to the workflow's result backend but consumes another
    broker (db 1 where the workflow publishes to db 2 — a typo in one URL) passes the
    pre-submit check (only the result backend's registry is read; the broker each worker
    advertises is ignored); the task sits in a broker nobody reads and the step fails
    only after the whole queue_timeout (default 5 min; 30 s here). Expected: an error at
    once that no worker consumes the queue on that broker."""
    q = f"brk-{uuid.uuid4().hex[:6]}"
    base = f"redis://127.0.0.1:{own_redis.port}"
    cluster.start("hostA", [q], broker=f"{base}/1", backend=f"{base}/0")
    flow = flow_file(tmp_path, f"""
        name: otherbroker
        executor: celery
        executor_options: {{broker: '{base}/2', backend: '{base}/0', queue: {q}}}
        queue_timeout: 30s
        steps:
          - {{name: a, run: 'true'}}
        """)
    start = time.monotonic()
    res = flowsh("run", str(flow), "--quiet", timeout=90)
    took = time.monotonic() - start
    assert res.returncode != 0
    assert took < 15, f"the step waited {took:.1f}s on a broker no worker reads: {res.stderr}"


# -- Celery: "at most one live attempt of a step, across crashes of anything" ---------------


def test_resume_on_the_local_executor_ignores_remote_attempts(own_redis: RedisServer,
                                                              cluster: Cluster,
                                                              tmp_path: Path,
                                                              celery_home: Path):
    """Promise: "at most one live attempt of a step, across crashes of anything" (REMOTE-*:
    a resume after the coordinator died stops or adopts the remote attempt first).

    Observed: the coordinator is killed with -9 while step `s` runs on a Celery worker;
    `flowsh resume RUN --file local.yaml` from another coordinator host (the same workflow
    without its executor lines: the operator resumes without the workers) starts `s`
    locally at once, while the remote attempt is still running: the step's
    trace shows OVERLAP. The recorded run has the attempt's task id and queue, but
    stop_remote is asked of the executor of the resume, and the local one has none.
    Expected: the remote attempt is stopped (confirmed) before anything starts, or the
    resume is refused with a clear message."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs unshare --uts (root) to stand for another coordinator host")
    q = f"loc-{uuid.uuid4().hex[:6]}"
    cluster.start("hostA", [q], own_redis.url, own_redis.url)
    flow = flow_file(tmp_path, f"""
        name: resumelocal
        executor: celery
        executor_options: {{broker: '{own_redis.url}', queue: {q}}}
        kill_grace: 0.5s
        steps:
          - name: s
            run: {block(traced(tmp_path, "sleep 8"), 14)}
        """)
    proc = run_bg(flow)
    wait_for(lambda: any(ln.startswith("start") for ln in trace(tmp_path)),
             "the remote attempt to start")
    proc.kill()
    proc.wait()
    run_id = latest_run_id()
    assert run_id is not None
    # The same workflow without its executor lines: the operator resumes without workers.
    local = flow_file(tmp_path, flow.read_text().replace("executor: celery\n", "").replace(
        f"executor_options: {{broker: '{own_redis.url}', queue: {q}}}\n", ""), "local.yaml")
    # Resumed from another coordinator host (its own hostname; same shared state).
    res = subprocess.run(
        ["unshare", "--uts", "sh", "-c", 'hostname "$0"; exec "$@"', "coordinator-b",
         sys.executable, "-m", "flowsh", "resume", run_id, "--file", str(local), "--quiet"],
        capture_output=True, text=True, timeout=60, check=False)
    lines = trace(tmp_path)
    assert "OVERLAP" not in lines, (lines, res.stderr)


# -- Celery: "a run never stays running" ----------------------------------------------------


def test_backend_gone_for_good_leaves_the_run_running(own_redis: RedisServer,
                                                      cluster: Cluster, tmp_path: Path,
                                                      celery_home: Path):
    """Promise: "a run never stays running" / timeouts hold (issue 13: deadlines; a lost
    worker is noticed in seconds).

    Observed: the Redis that is broker and result backend dies (kill -9, never back)
    while a step with `timeout: 3s` runs on a worker. The worker ends the step at its
    timeout but cannot report it; the runner catches every error in its once-a-second
    check ("nothing can be decided while the backend is away") and waits for ever:
    `flowsh run` is still running, the run `running`, 40 s later. Expected: the runner
    gives up after a bounded time (the step's timeout plus lost_after, or a backend
    deadline) and the run ends failed."""
    q = f"away-{uuid.uuid4().hex[:6]}"
    cluster.start("hostA", [q], own_redis.url, own_redis.url)
    flow = flow_file(tmp_path, f"""
        name: backendaway
        executor: celery
        executor_options: {{broker: '{own_redis.url}', queue: {q}, lost_after: 3}}
        steps:
          - name: s
            timeout: 3s
            run: {block(traced(tmp_path, "sleep 30"), 14)}
        """)
    proc = run_bg(flow)
    try:
        wait_for(lambda: any(ln.startswith("start") for ln in trace(tmp_path)),
                 "the step to start on the worker")
        own_redis.kill()
        killed = time.monotonic()
        while proc.poll() is None and time.monotonic() - killed < 40:
            time.sleep(0.2)
        took = time.monotonic() - killed
        assert proc.poll() is not None, (
            f"flowsh run still running {took:.0f}s after the backend died "
            "(step timeout 3s, lost_after 3s)")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_broker_restart_mid_run_strands_the_next_step(own_redis: RedisServer,
                                                      cluster: Cluster, tmp_path: Path,
                                                      celery_home: Path):
    """Promise: "a run never stays running" / the broker going down mid-run is survived
    (docs/distributed-celery.md: the result backend's outage is judged when it answers).

    Observed: the Redis that is broker and result backend restarts (kill -9, back 1 s
    later, without persistence, as a container restart does) while step `a` runs. `a`
    ends and is reported, but the run's liveness key `flowsh:run:RUN` died with the
    restart and the runner re-creates it only every 10 s: step `b`, submitted at once,
    is refused by the worker's claim ("its run is no longer live") and the runner is not
    told. `b` then waits its whole queue_timeout (default 5 min; 30 s here) and fails
    with exit 124 though a worker was idle on its queue all along. Expected: `b` runs
    and the run succeeds in a few seconds."""
    q = f"rst-{uuid.uuid4().hex[:6]}"
    cluster.start("hostA", [q], own_redis.url, own_redis.url)
    flow = flow_file(tmp_path, f"""
        name: brokerrestart
        executor: celery
        executor_options: {{broker: '{own_redis.url}', queue: {q}}}
        queue_timeout: 30s
        steps:
          - name: a
            run: {block(traced(tmp_path, "sleep 4"), 14)}
          - {{name: b, needs: [a], run: 'echo b-ran >> {tmp_path}/trace'}}
        """)
    proc = run_bg(flow)
    try:
        wait_for(lambda: any(ln.startswith("start") for ln in trace(tmp_path)),
                 "step a to start on the worker")
        own_redis.kill()
        time.sleep(1)  # the outage itself is the test's input
        own_redis.start()
        restarted = time.monotonic()
        while proc.poll() is None and time.monotonic() - restarted < 45:
            time.sleep(0.2)
        took = time.monotonic() - restarted
        _out, err = proc.communicate(timeout=60) if proc.poll() is not None else ("", "")
        assert proc.returncode == 0 and took < 20, (
            f"run ended {proc.returncode} {took:.0f}s after the broker came back: {err}",
            trace(tmp_path))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


# -- PostgreSQL: "locks span hosts" ---------------------------------------------------------


def pg_terminate(application_name: str) -> int:
    """pg_terminate_backend on the sessions named so (ours only: the names carry a
    workflow or run id unique to the test); how many there were."""
    import psycopg

    with psycopg.connect(PG, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s", (application_name,)).fetchall()
    return len(rows)


class Host:
    def __init__(self, root: Path, name: str, url: str) -> None:
        self.dir = root / name
        self.dir.mkdir()
        self.env = {"FLOWSH_HOME": str(self.dir / "home"), "FLOWSH_STATE": url}

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "flowsh", *args], cwd=self.dir,
                                env={**os.environ, **self.env}, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "flowsh", *args], cwd=self.dir,
                              env={**os.environ, **self.env}, text=True,
                              capture_output=True, timeout=timeout, check=False)


def test_overlap_skip_lock_lost_lets_a_second_coordinator_run(pg_url: str,
                                                               tmp_path: Path):
    """Promise: "PostgreSQL locks span hosts" (`overlap: skip` through advisory locks:
    a second coordinator of a running workflow exits 75 without running a step).

    Observed: the session holding coordinator A's overlap lock is terminated
    (pg_terminate_backend: a DBA, a pooler, idle_session_timeout, a failover) while A's
    step runs. The server drops the advisory lock with it, and A notices only at its next
    transition or heartbeat (every 10 s): coordinator B, started meanwhile, takes the lock
    and runs the same step beside A's (the trace shows OVERLAP). Expected: B is skipped
    (exit 75), or A stops its steps before the lock can be taken by another host."""
    name = f"ovl{uuid.uuid4().hex[:8]}"
    flow = flow_file(tmp_path, f"""
        name: {name}
        overlap: skip
        steps:
          - name: s
            run: {block(traced(tmp_path, "sleep 6"), 14)}
        """)
    a, b = Host(tmp_path, "a", pg_url), Host(tmp_path, "b", pg_url)
    pa = a.start("run", str(flow), "--quiet")
    try:
        wait_for(lambda: any(ln.startswith("start") for ln in trace(tmp_path)),
                 "A's step to start")
        assert pg_terminate(f"flowsh workflow {name}") == 1
        res = b.cli("run", str(flow), "--quiet", timeout=60)
        lines = trace(tmp_path)
        assert res.returncode == 75 and "OVERLAP" not in lines, (res.returncode,
                                                                 res.stderr, lines)
    finally:
        if pa.poll() is None:
            pa.kill()
        pa.communicate()


def test_runner_lock_lost_makes_a_live_run_resumable_elsewhere(pg_url: str,
                                                                tmp_path: Path):
    """Promise: "a dead coordinator is known for certain the moment its connection drops"
    and "at most one live attempt of a step" (PostgreSQL state, the run's session-level
    advisory lock).

    Observed (`overlap: allow`: runs of the workflow may overlap, but one run is resumed
    only when its runner is dead): the session holding run R's liveness lock is
    terminated while R's
    coordinator (A) is alive and its step runs. Another host reads R as crashed at once
    (no lock holder) and `flowsh resume R` there runs the step again beside A's attempt:
    the trace shows OVERLAP. A takes the lock again only at its next heartbeat (10 s).
    Expected: a live runner is not taken for dead (the resume exits 75, "still
    running"), or the runner stops its steps before it lets its lock go."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs unshare --uts (root) to stand for another coordinator host")
    name = f"liv{uuid.uuid4().hex[:8]}"
    flow = flow_file(tmp_path, f"""
        name: {name}
        overlap: allow
        steps:
          - name: s
            run: {block(traced(tmp_path, "sleep 6"), 14)}
        """)
    a = Host(tmp_path, "a", pg_url)
    pa = a.start("run", str(flow), "--quiet")
    try:
        wait_for(lambda: any(ln.startswith("start") for ln in trace(tmp_path)),
                 "A's step to start")
        res = a.cli("history", "--json")
        run_id = json.loads(res.stdout)[0]["run_id"]
        assert pg_terminate(f"flowsh run {run_id}"[:63]) == 1
        b = Host(tmp_path, "b", pg_url)
        res = subprocess.run(
            ["unshare", "--uts", "sh", "-c", 'hostname "$0"; exec "$@"', "coordinator-b",
             sys.executable, "-m", "flowsh", "resume", run_id, "--quiet"],
            cwd=b.dir, env={**os.environ, **b.env}, capture_output=True, text=True,
            timeout=60, check=False)
        lines = trace(tmp_path)
        assert res.returncode == 75 and "OVERLAP" not in lines, (res.returncode,
                                                                 res.stderr, lines)
    finally:
        if pa.poll() is None:
            pa.kill()
        pa.communicate()


# -- Celery: bad executor_options -----------------------------------------------------------


@pytest.mark.parametrize("value", [".inf", ".nan"])
def test_infinite_lost_after_is_accepted_then_hangs(own_redis: RedisServer, cluster: Cluster,
                                                    tmp_path: Path, celery_home: Path,
                                                    value: str):
    """Promise: "a mismatched configuration is an error, not a hang"; bad input is one
    clear line and exit 2 before anything runs.

    Observed: `executor_options: {lost_after: .inf}` (or `.nan`) passes the check
    (`value <= 0` is False for both). The worker then fails converting it to a heartbeat
    TTL (OverflowError / ValueError in the task, before the claim); the runner is never
    told, and a one-second step leaves `flowsh run` waiting for the queue_timeout
    (default 5 min). Expected: exit 2 at once, naming executor_options.lost_after."""
    q = f"inf-{uuid.uuid4().hex[:6]}"
    cluster.start("hostA", [q], own_redis.url, own_redis.url)
    flow = flow_file(tmp_path, f"""
        name: badopts
        executor: celery
        executor_options: {{broker: '{own_redis.url}', queue: {q}, lost_after: {value}}}
        steps:
          - {{name: a, run: 'true'}}
        """)
    proc = run_bg(flow)
    try:
        start = time.monotonic()
        while proc.poll() is None and time.monotonic() - start < 20:
            time.sleep(0.1)
        assert proc.poll() is not None, "flowsh run still waiting 20s later for a `true` step"
        _, err = proc.communicate()
        assert proc.returncode == 2 and "lost_after" in err, (proc.returncode, err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


# -- secrets ----------------------------------------------------------------------------------


def _expand(value: bytes) -> str:
    """A value as text; a kombu message's base64 body decoded (what any reader can do)."""
    import base64

    text = value.decode("utf-8", "replace")
    with contextlib.suppress(ValueError, TypeError, AttributeError, KeyError):
        message = json.loads(text)
        text += "\n" + base64.b64decode(message["body"]).decode("utf-8", "replace")
    return text


def redis_text(server: RedisServer) -> str:
    """Every value of every key in every db of the server, as text."""
    out: list[object] = []
    for db in range(16):
        r = redis.Redis(host="127.0.0.1", port=server.port, db=db)
        for key in r.scan_iter():
            kind = r.type(key).decode()
            if kind == "string":
                out.append(r.get(key))
            elif kind == "list":
                out.extend(r.lrange(key, 0, -1))
            elif kind == "hash":
                out.extend(r.hgetall(key).values())
            elif kind == "set":
                out.extend(r.smembers(key))
            elif kind == "zset":
                out.extend(r.zrange(key, 0, -1))
        r.close()
    return "\n".join(_expand(v) for v in out if isinstance(v, bytes))


def test_secret_output_stays_in_redis_after_the_coordinator_died(own_redis: RedisServer,
                                                                  cluster: Cluster,
                                                                  tmp_path: Path,
                                                                  celery_home: Path):
    """Promise: secrets never reach the store or logs in clear (SECRET-1/2; issue 13's
    brief: nor Redis keys).

    Observed: the coordinator is killed with -9 while a step that writes a secret output
    (`API_TOKEN=...` to $FLOWSH_OUTPUT) runs on a worker. The worker pushes the attempt's
    end, with the outputs in clear, to the dead runner's event list `flowsh:ev:CLIENT`,
    which nobody reads and which lives 24 h; `flowsh resume` (which runs the step again
    and succeeds) does not remove it. The token is readable in Redis by anyone with
    access to the broker after the run is over. Expected: no secret value in
    any Redis key once the resume has finished (or: the outputs travel masked/encrypted)."""
    q = f"sec-{uuid.uuid4().hex[:6]}"
    cluster.start("hostA", [q], own_redis.url, own_redis.url)
    token = f"tok-{uuid.uuid4().hex}"
    flow = flow_file(tmp_path, f"""
        name: secretout
        executor: celery
        executor_options: {{broker: '{own_redis.url}', queue: {q}}}
        kill_grace: 0.5s
        steps:
          - name: s
            run: |
              echo start >> {tmp_path}/trace
              sleep 2
              echo "API_TOKEN={token}" >> "$FLOWSH_OUTPUT"
              echo end >> {tmp_path}/trace
        """)
    proc = run_bg(flow)
    wait_for(lambda: "start" in trace(tmp_path), "the step to start on the worker")
    proc.kill()
    proc.wait()
    wait_for(lambda: "end" in trace(tmp_path), "the step to end on the worker")
    run_id = latest_run_id()
    assert run_id is not None
    res = flowsh("resume", run_id, "--quiet", timeout=60)
    assert res.returncode == 0, res.stderr
    assert token not in redis_text(own_redis), "the secret output is readable in Redis"


def test_secret_param_stays_in_the_broker_after_the_run(own_redis: RedisServer,
                                                        tmp_path: Path, celery_home: Path):
    """Promise: secrets never reach the store or logs in clear (SECRET-2; issue 13's
    brief: nor the broker message or Redis keys). The plugin's README says the request
    "passes through the broker": this is about what stays there.

    Observed: a step with a secret param (`DB_PASSWORD`) is sent to a queue no worker
    takes (check_workers: false); it fails at its queue_timeout and the run ends, but the
    task message — the step's environment, DB_PASSWORD in clear, plus the list of secret
    values — stays in the broker's list for ever (no TTL; "given up" only changes the
    `want` key). Expected: no secret value in Redis once the run is over (the message
    removed when given up, or the secrets not sent in clear)."""
    q = f"nobody-{uuid.uuid4().hex[:6]}"
    password = f"pw-{uuid.uuid4().hex}"
    flow = flow_file(tmp_path, f"""
        name: secretparam
        executor: celery
        executor_options: {{broker: '{own_redis.url}', queue: {q}, check_workers: false}}
        queue_timeout: 2s
        params:
          DB_PASSWORD: ''
        steps:
          - {{name: a, run: 'echo "$DB_PASSWORD" > /dev/null'}}
        """)
    res = flowsh("run", str(flow), f"DB_PASSWORD={password}", "--quiet", timeout=60)
    assert res.returncode == 1, res.stderr
    assert "queue_timeout" in res.stderr
    assert password not in redis_text(own_redis), "the secret param is readable in Redis"


# -- Celery: a worker cut off from Redis -------------------------------------------------------


class CuttableProxy:
    """A TCP forwarder to Redis that one worker ("host") talks through; cut() stands for
    that host losing the network the fast way (connections reset, new ones refused, as
    with an iptables REJECT rule or the Redis address moving)."""

    def __init__(self, upstream_port: int) -> None:
        import threading

        self.upstream = upstream_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = int(self.listener.getsockname()[1])
        self.socks: list[socket.socket] = []
        self.cut_off = False
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        while not self.cut_off:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                client.close()
                continue
            with self.lock:
                if self.cut_off:
                    client.close()
                    up.close()
                    return
                self.socks += [client, up]
            for a, b in ((client, up), (up, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self.lock:
            self.cut_off = True
            with contextlib.suppress(OSError):
                self.listener.close()
            for s in self.socks:
                with contextlib.suppress(OSError):
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)  # wakes the pump blocked in recv()
                with contextlib.suppress(OSError):
                    s.close()  # RST


def test_worker_cut_off_from_redis_keeps_running_beside_the_retry(own_redis: RedisServer,
                                                                  cluster: Cluster,
                                                                  tmp_path: Path,
                                                                  celery_home: Path):
    """Promise: "at most one live attempt of a step, across crashes of anything"
    (docs/distributed-celery.md, "Worker hung or cut off (network partition)": the
    supervisor stops the step after lost_after/2, before the runner retries).

    Observed: host A's worker loses Redis the fast way (connections reset and refused)
    while its step runs. Its heartbeat writes fail at once and are ignored ("the runner
    decides"), the pool process keeps ticking its supervisor, so nothing on host A stops
    the step. The runner declares the worker lost after lost_after (4 s here) and starts
    the retry on host B while A's attempt still runs: the trace shows OVERLAP. Expected:
    a worker that cannot refresh an attempt's heartbeat stops the attempt within
    lost_after/2, before the runner can start another."""
    q = f"cut-{uuid.uuid4().hex[:6]}"
    proxy = CuttableProxy(own_redis.port)
    via = f"redis://127.0.0.1:{proxy.port}/0"
    cluster.start("hostA", [q], via, via)
    tick = f'for i in $(seq 50); do echo "tick $$" >> {tmp_path}/trace; sleep 0.5; done'
    flow = flow_file(tmp_path, f"""
        name: cutoff
        executor: celery
        executor_options: {{broker: '{own_redis.url}', queue: {q}, lost_after: 4}}
        kill_grace: 0.5s
        steps:
          - name: s
            retries: 1
            run: {block(traced(tmp_path, tick), 14)}
        """)
    proc = run_bg(flow)
    try:
        wait_for(lambda: any(ln.startswith("start") for ln in trace(tmp_path)),
                 "the first attempt to start on host A")
        cluster.start("hostB", [q], own_redis.url, own_redis.url)
        proxy.cut()
        cut = time.monotonic()
        wait_for(lambda: sum(ln.startswith("start") for ln in trace(tmp_path)) >= 2
                 or proc.poll() is not None, "the retry on host B", 40)
        took = time.monotonic() - cut
        first = trace(tmp_path)[0].split()[1]
        time.sleep(1.5)  # A's attempt, if alive, ticks every 0.5 s
        lines = trace(tmp_path)
        second = next(n for n, ln in enumerate(lines) if ln.startswith("start")
                      and ln.split()[1] != first)
        ticks_after = sum(ln == f"tick {first}" for ln in lines[second:])
        assert "OVERLAP" not in lines and ticks_after == 0, (
            f"A's attempt ticked {ticks_after} times after the retry started; "
            f"retry started {took:.1f}s after the cut")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_pkill_celery_leaves_the_step_running_beside_the_retry(own_redis: RedisServer,
                                                               cluster: Cluster,
                                                               tmp_path: Path,
                                                               celery_home: Path):
    """Promise: "at most one live attempt of a step, across crashes of anything" (issue
    13: the lost attempt's processes are stopped; the step runs under a supervisor that
    takes its process group down when the worker dies).

    Observed: every celery process of host A's worker is killed with -9 at once (what
    `pkill -9 -f celery` does to a stuck worker: the main process, the pool process and
    the supervisor forked from it, whose command line is the worker's). The step's own
    processes (a session of their own) survive, nothing is left to stop them; the runner
    declares the worker lost and starts the retry on host B while A's step still runs
    (it keeps writing to the trace). Expected: the step's processes die with the worker
    (e.g. a parent-death signal, or a supervisor that is not a celery process)."""
    q = f"pk-{uuid.uuid4().hex[:6]}"
    a = cluster.start("hostA", [q], own_redis.url, own_redis.url)
    tick = f'for i in $(seq 60); do echo "tick $$" >> {tmp_path}/trace; sleep 0.5; done'
    flow = flow_file(tmp_path, f"""
        name: pkill
        executor: celery
        executor_options: {{broker: '{own_redis.url}', queue: {q}, lost_after: 3}}
        kill_grace: 0.5s
        steps:
          - name: s
            retries: 1
            run: {block(traced(tmp_path, tick), 14)}
        """)
    proc = run_bg(flow)
    try:
        wait_for(lambda: any(ln.startswith("start") for ln in trace(tmp_path)),
                 "the attempt to start on host A")
        first = trace(tmp_path)[0].split()[1]
        cluster.start("hostB", [q], own_redis.url, own_redis.url)
        celery = []
        for pid in [a.proc.pid, *descendants(a.proc.pid)]:
            with contextlib.suppress(OSError):
                if b"flowsh_celery.worker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    celery.append(pid)
        # main and pool; the supervisor is, by design since this test, no celery process
        # (what the docstring asks for), so `pkill -f celery` leaves it.
        assert len(celery) >= 2, celery
        for pid in celery:
            os.kill(pid, signal.SIGKILL)
        took = wait_for(lambda: any(ln.startswith("start") and ln.split()[1] != first
                             for ln in trace(tmp_path)) or proc.poll() is not None,
                 "the retry on host B", 40)
        time.sleep(1.5)
        lines = trace(tmp_path)
        second = next((n for n, ln in enumerate(lines) if ln.startswith("start")
                       and ln.split()[1] != first), len(lines))
        ticks_after = sum(ln == f"tick {first}" for ln in lines[second:])
        assert ticks_after == 0, (
            f"A's step ticked {ticks_after} times after the retry began "
            f"({took:.1f}s after the kill)")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()



def test_bad_executor_options_pass_validate_and_lack_file_line(tmp_path: Path,
                                                                celery_home: Path):
    """Promise: "bad input: one clear line naming FILE:LINE and key, exit 2" (COMMON
    standards; EXIT-2), and `flowsh validate` checks a file without running it.

    Observed: `executor_options: {lost_after: -1}` (and unknown options, or an unknown
    `executor:`) make `flowsh validate` print "ok"; `flowsh run` then refuses with a line
    that names neither the file nor the line ("executor 'celery':
    executor_options.lost_after must be a number of seconds > 0 (got -1)"). Expected:
    validate exits 2, and both messages start with flow.yaml:LINE."""
    flow = flow_file(tmp_path, """
        name: badopts
        executor: celery
        executor_options: {broker: 'redis://127.0.0.1:1/0', lost_after: -1}
        steps:
          - {name: a, run: 'true'}
        """)
    ran = flowsh("run", str(flow), "--quiet")
    checked = flowsh("validate", str(flow))
    assert ran.returncode == 2, ran.stderr
    assert checked.returncode == 2 and f"{flow}:3" in checked.stdout + checked.stderr, (
        checked.stdout, checked.stderr)
    assert f"{flow}:3" in ran.stderr, ran.stderr


def test_queue_timeout_zero_silently_means_five_minutes(own_redis: RedisServer,
                                                        tmp_path: Path, celery_home: Path):
    """Promise: REMOTE-2 (`queue_timeout` bounds how long an attempt may wait for a worker)
    and "bad input is refused, exit 2, FILE:LINE".

    Observed: `queue_timeout: 0s` is accepted by the loader (it refuses -1s), and the
    executor reads it as "unset" (`request.queue_timeout or self.queue_timeout`): a step
    on a queue nobody consumes waits the executor's default 5 minutes instead of failing
    at once. Expected: refused at load (exit 2 naming the key), or failed at once."""
    flow = flow_file(tmp_path, f"""
        name: qzero
        executor: celery
        executor_options: {{broker: '{own_redis.url}', queue: nobody-{uuid.uuid4().hex[:6]},
                            check_workers: false}}
        queue_timeout: 0s
        steps:
          - {{name: a, run: 'true'}}
        """)
    proc = run_bg(flow)
    try:
        start = time.monotonic()
        while proc.poll() is None and time.monotonic() - start < 20:
            time.sleep(0.1)
        assert proc.poll() is not None, "queue_timeout: 0s still waiting after 20 s"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_resume_on_another_host_runs_beside_the_dead_runners_local_step(pg_url: str,
                                                                          tmp_path: Path):
    """Promise: REMOTE-3 ("a resume ... after the runner died MUST first stop any attempt
    the dead runner left running (on this host or on a worker) and have it confirmed
    stopped") with PostgreSQL state shared by two coordinator hosts (docs/distributed.md:
    "`resume` from another host ... continues host A's crashed run").

    Observed: coordinator A (local executor) is killed with -9 while its step runs; the
    step (a session of its own) keeps running on host A. `flowsh resume RUN` on host B
    reads the run crashed at once and, since the run's host is not B
    (resume.stop_orphans returns early), starts the step again beside A's, with no
    warning: the trace shows OVERLAP. Expected: B refuses (exit 75, "steps of run R may
    still run on host A; resume there") or waits, rather than run the step twice at once."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs unshare --uts (root) to stand for another coordinator host")
    flow = flow_file(tmp_path, f"""
        name: xhost{uuid.uuid4().hex[:6]}
        steps:
          - name: s
            run: {block(traced(tmp_path, "sleep 5"), 14)}
        """)
    a, b = Host(tmp_path, "a", pg_url), Host(tmp_path, "b", pg_url)
    pa = a.start("run", str(flow), "--quiet")
    wait_for(lambda: any(ln.startswith("start") for ln in trace(tmp_path)),
             "A's step to start")
    pa.kill()
    pa.communicate()
    run_id = json.loads(a.cli("history", "--json").stdout)[0]["run_id"]
    res = subprocess.run(
        ["unshare", "--uts", "sh", "-c", 'hostname "$0"; exec "$@"', "coordinator-b",
         sys.executable, "-m", "flowsh", "resume", run_id, "--quiet"],
        cwd=b.dir, env={**os.environ, **b.env}, capture_output=True, text=True,
        timeout=60, check=False)
    lines = trace(tmp_path)
    assert "OVERLAP" not in lines, (res.returncode, res.stderr, lines)


def test_coordinator_cut_off_from_postgresql_runs_beside_the_resume(pg_url: str,
                                                                     tmp_path: Path):
    """Promise: "PostgreSQL locks span hosts" / "at most one live attempt of a step"
    (docs/distributed.md: the database gone for a coordinator: "the run stops its steps
    and exits 3"; a coordinator that vanishes is seen dead by the server).

    Observed: coordinator A reaches PostgreSQL through a link that fails the fast way
    (connections reset, new ones refused: a REJECT rule, a moved address) while its step
    runs. The server sees A's sessions close and drops its run and overlap locks at
    once, so host B reads the run `crashed` and `flowsh resume` there starts the step
    again — while A, which notices only at its next write (heartbeat every 10 s) and then
    retries for FLOWSH_PG_RECONNECT (15 s), keeps its step running: the trace shows
    OVERLAP and A's attempt keeps ticking. Expected: a coordinator that has lost its lock
    connection stops its steps before another host can take the run over."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs unshare --uts (root) to stand for another coordinator host")
    proxy = CuttableProxy(5432)
    via = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    tick = f'for i in $(seq 40); do echo "tick $$" >> {tmp_path}/trace; sleep 0.5; done'
    flow = flow_file(tmp_path, f"""
        name: cut{uuid.uuid4().hex[:6]}
        overlap: allow
        steps:
          - name: s
            run: {block(traced(tmp_path, tick), 14)}
        """)
    a, b = Host(tmp_path, "a", via), Host(tmp_path, "b", pg_url)
    pa = a.start("run", str(flow), "--quiet")
    first = ""
    try:
        wait_for(lambda: any(ln.startswith("start") for ln in trace(tmp_path)),
                 "A's step to start")
        first = trace(tmp_path)[0].split()[1]
        run_id = json.loads(b.cli("history", "--json").stdout)[0]["run_id"]
        proxy.cut()

        def crashed() -> bool:
            res = b.cli("status", run_id, "--json")
            return res.returncode == 0 and json.loads(res.stdout)["status"] == "crashed"

        seen = wait_for(crashed, "host B to read the run crashed", 15)
        resumed = subprocess.Popen(
            ["unshare", "--uts", "sh", "-c", 'hostname "$0"; exec "$@"', "coordinator-b",
             sys.executable, "-m", "flowsh", "resume", run_id, "--quiet"],
            cwd=b.dir, env={**os.environ, **b.env}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: any(ln.startswith("start") and ln.split()[1] != first
                                 for ln in trace(tmp_path)) or resumed.poll() is not None,
                     "B's resume to start the step (or end)", 30)
            time.sleep(1.5)
            lines = trace(tmp_path)
            second = next((n for n, ln in enumerate(lines) if ln.startswith("start")
                           and ln.split()[1] != first), len(lines))
            ticks_after = sum(ln == f"tick {first}" for ln in lines[second:])
            assert "OVERLAP" not in lines and ticks_after == 0, (
                f"A's step ticked {ticks_after} times after B's resume started it again "
                f"(B read the run crashed {seen:.1f}s after the cut)")
        finally:
            if resumed.poll() is None:
                resumed.kill()
            resumed.communicate()
    finally:
        if pa.poll() is None:
            pa.kill()
        pa.communicate()
        for line in trace(tmp_path):  # the steps the killed coordinators left
            with contextlib.suppress(ProcessLookupError, ValueError, IndexError):
                if line.startswith("start"):
                    os.killpg(int(line.split()[1]), signal.SIGKILL)
