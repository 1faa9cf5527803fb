"""PostgreSQL state (`postgresql://`) against the machine's real server at 127.0.0.1:5432.

Each test gets a schema of its own (`?options=-csearch_path%3D…`, created by flowsh, dropped
after), so xdist workers never meet. Two coordinators stand for two hosts: each has its own
FLOWSH_HOME and working directory, and shares nothing with the other but the database.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from flowsh.builtin.state_postgresql import SCHEMA_VERSION
from flowsh.errors import EXIT_LOCKED, EXIT_STATE, EXIT_USAGE, StateError
from flowsh.state import RunRecord, StepRecord
from flowsh.store import open_backend
from tests.conftest import PG_SERVER, pg_server_or_skip, wait_dead

psycopg = pg_server_or_skip()


class Host:
    """A coordinator host: its own FLOWSH_HOME and working directory, the shared state URL."""

    def __init__(self, root: Path, name: str, url: str) -> None:
        self.dir = root / name
        self.dir.mkdir()
        self.env = {**os.environ, "FLOWSH_HOME": str(self.dir / "home"), "FLOWSH_STATE": url}

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "flowsh", *args], cwd=self.dir,
                              env=self.env, text=True, capture_output=True, timeout=timeout,
                              check=False)

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "flowsh", *args], cwd=self.dir,
                                env=self.env, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)

    def status(self, run_id: str = "") -> dict[str, object]:
        res = self.cli("status", *([run_id] if run_id else []), "--json")
        assert res.returncode == 0, res.stderr
        data: dict[str, object] = json.loads(res.stdout)
        return data


def _wait_for(path: Path, proc: subprocess.Popen[str] | None = None, seconds: float = 30) -> None:
    end = time.monotonic() + seconds
    while not path.exists():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"runner exited {proc.returncode}: {proc.communicate()}")
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.05)


def _record(run_id: str, workflow: str = "w", started: float = 1.0) -> RunRecord:
    return RunRecord(run_id=run_id, workflow=workflow, file=None, definition_hash="h",
                     params={"a": "1"}, started_at=started, step_names=["s"],
                     steps={"s": StepRecord(name="s")})


# -- the store ----------------------------------------------------------------------------


def test_records_round_trip_with_sqlites_filters_and_order(pg_url: str) -> None:
    b = open_backend(pg_url)
    run = _record("r1")
    b.create_run(run)
    step = run.steps["s"]
    step.status, step.attempts, step.outputs = "succeeded", 2, {"K": "v"}
    b.save_step(run, step)
    run.status, run.exit_code, run.heartbeat = "succeeded", 0, 5.5
    b.update_run(run)
    b.create_run(_record("r2", started=2.0))
    b.create_run(_record("x3", workflow="other", started=3.0))
    again = b.load_run("r1")
    assert again.status == "succeeded" and again.steps["s"].outputs == {"K": "v"}
    assert again.steps["s"].attempts == 2 and again.params == {"a": "1"}
    assert again.heartbeat == 5.5
    assert [r.run_id for r in b.list_runs()] == ["x3", "r2", "r1"]
    assert [r.run_id for r in b.list_runs("w")] == ["r2", "r1"]
    assert [r.run_id for r in b.list_runs(limit=1)] == ["x3"]
    assert [r.run_id for r in b.list_runs(statuses=frozenset({"running"}))] == ["x3", "r2"]
    assert b.load_run("x").run_id == "x3"  # a unique prefix
    with pytest.raises(Exception, match="ambiguous"):
        b.load_run("r")
    with pytest.raises(Exception, match="no run 'nope'"):
        b.load_run("nope")
    b.heartbeat(RunRecord(**{**_record("r2").__dict__, "heartbeat": 9.0}))
    assert b.load_run("r2").heartbeat == 9.0
    assert b.delete_runs(["r1", "x3"]) == 2
    assert [r.run_id for r in b.list_runs()] == ["r2"]
    b.close()


def test_skip_reason_added_after_the_schema_round_trips_with_no_migration(pg_url: str) -> None:
    # StepRecord.skip_reason came after this backend's schema 1: the jsonb record carries it.
    from flowsh.state import SkipReason

    b = open_backend(pg_url)
    run = _record("r1")
    b.create_run(run)
    step = run.steps["s"]
    step.status, step.skip_reason = "skipped", SkipReason.EXIT_CODE
    b.save_step(run, step)
    assert b.load_run("r1").steps["s"].skip_reason == SkipReason.EXIT_CODE
    b.close()


def test_a_field_a_newer_flowsh_adds_flows_through_without_a_schema_change(pg_url: str) -> None:
    # Another plugin (Celery) may add task_id/worker/queue to StepRecord: the record is
    # jsonb, so this flowsh reads such rows, and writes what it knows.
    b = open_backend(pg_url)
    b.create_run(_record("r1"))
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("""UPDATE flowsh_steps SET record = record || '{"task_id": "t-1"}'""")
        conn.execute("""UPDATE flowsh_runs SET record = record || '{"queue": "q"}'""")
    run = b.load_run("r1")
    assert run.steps["s"].status == "pending" and run.workflow == "w"
    b.close()


def test_two_coordinators_migrating_at_once_create_the_schema_once(pg_url: str,
                                                                   tmp_path: Path) -> None:
    code = ("import sys; from flowsh.store import open_backend; "
            "b = open_backend(sys.argv[1]); print(b.schema); b.close()")
    procs = [subprocess.Popen([sys.executable, "-c", code, pg_url], text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(6)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, outs
    schema = pg_url.rsplit("%3D", 1)[1]
    assert {o.strip() for o, _ in outs} == {schema}
    with psycopg.connect(PG_SERVER) as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            (schema,))}
        version = conn.execute(f'SELECT version FROM "{schema}".flowsh_meta').fetchall()
    assert tables == {"flowsh_meta", "flowsh_runs", "flowsh_steps", "flowsh_lock_holders",
                      "flowsh_pool_holders"}
    assert version == [(SCHEMA_VERSION,)]


def test_a_schema_from_a_newer_flowsh_is_refused(pg_url: str) -> None:
    open_backend(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE flowsh_meta SET version = 99")
    with pytest.raises(StateError, match="newer flowsh"):
        open_backend(pg_url)


# -- the CLI on PostgreSQL state ---------------------------------------------------------

FLOW = """
name: nightly
steps:
  - {name: extract, run: 'echo extract >> ran'}
  - {name: load, run: 'echo load >> ran; test -e fixed', needs: [extract]}
  - {name: report, run: 'echo report >> ran', needs: [load]}
"""


def test_run_status_history_stats_report_prune_resume_through_the_cli(
    pg_url: str, tmp_path: Path
) -> None:
    host = Host(tmp_path, "a", pg_url)
    (host.dir / "flow.yaml").write_text(FLOW)
    failed = host.cli("run", "-q", "flow.yaml")
    assert failed.returncode == 1, failed.stderr
    run_id = host.status()["run_id"]
    st = host.cli("status")
    assert st.returncode == 0 and "failed" in st.stdout and f"flowsh resume {run_id}" in st.stdout
    (host.dir / "fixed").touch()
    resumed = host.cli("resume", "-q", str(run_id))
    assert resumed.returncode == 0, resumed.stderr
    assert (host.dir / "ran").read_text().split() == ["extract", "load", "load", "report"]
    assert host.cli("run", "-q", "flow.yaml").returncode == 0
    hist = json.loads(host.cli("history", "--json").stdout)
    assert [h["status"] for h in hist] == ["succeeded", "succeeded"]
    stats = host.cli("stats", "nightly")
    assert stats.returncode == 0 and "2 finished runs" in stats.stdout, stats.stdout
    report = host.cli("report", str(run_id), "-o", "r.html")
    assert report.returncode == 0, report.stderr
    assert "nightly" in (host.dir / "r.html").read_text()
    pruned = host.cli("prune", "--keep", "1")
    assert pruned.returncode == 0 and "deleted 1 run" in pruned.stdout, pruned.stdout
    assert len(json.loads(host.cli("history", "--json").stdout)) == 1


# -- two coordinators sharing the database --------------------------------------------------

BLOCKING = """
name: nightly
overlap: skip
steps:
  - {name: a, run: 'touch started.$$; until [ -e ../release ]; do sleep 0.05; done'}
"""


def test_overlap_spans_hosts_skip_refuses_wait_waits(pg_url: str, tmp_path: Path) -> None:
    a, b = Host(tmp_path, "a", pg_url), Host(tmp_path, "b", pg_url)
    for h in (a, b):
        (h.dir / "flow.yaml").write_text(BLOCKING)
    first = a.start("run", "-q", "flow.yaml")
    end = time.monotonic() + 30
    while not list(a.dir.glob("started.*")):
        assert first.poll() is None and time.monotonic() < end, first.communicate()
        time.sleep(0.05)
    holder = a.status()["run_id"]
    skipped = b.cli("run", "-q", "flow.yaml")
    assert skipped.returncode == EXIT_LOCKED, skipped.stderr
    assert "already running" in skipped.stderr and f"run {holder}" in skipped.stderr
    assert skipped.stderr.count("\n") == 1
    gave_up = b.cli("run", "-q", "--overlap", "wait", "--lock-timeout", "0.3s", "flow.yaml")
    assert gave_up.returncode == EXIT_LOCKED and "gave up after waiting" in gave_up.stderr
    waiter = b.start("run", "-q", "--overlap", "wait", "flow.yaml")
    # Blocked on the lock, its step not started: watched for a while, by polling.
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        assert waiter.poll() is None and not list(b.dir.glob("started.*"))
        time.sleep(0.1)
    (tmp_path / "release").touch()
    assert first.wait(timeout=30) == 0
    assert waiter.wait(timeout=30) == 0, waiter.communicate()
    assert len(list(b.dir.glob("started.*"))) == 1
    hist = json.loads(b.cli("history", "--json").stdout)
    assert [h["status"] for h in hist] == ["succeeded", "succeeded"]


CRASHY = """
name: crashy
steps:
  - {name: s1, run: 'echo s1 >> ran'}
  - {name: s2, run: 'echo s2-start >> ran; touch started; until [ -e release ]; do sleep 0.05; done; echo s2 >> ran', needs: [s1]}
  - {name: s3, run: 'echo s3 >> ran', needs: [s2]}
"""


def test_a_killed_coordinator_is_crashed_at_once_on_the_other_host_and_resumed_there(
    pg_url: str, tmp_path: Path
) -> None:
    a, b = Host(tmp_path, "a", pg_url), Host(tmp_path, "b", pg_url)
    # The same path on both hosts, as a deployment has it; steps run in its directory.
    flow = tmp_path / "crashy.yaml"
    flow.write_text(CRASHY)
    runner = a.start("run", "-q", str(flow))
    _wait_for(tmp_path / "started", runner)
    seen = b.status()
    assert seen["status"] == "running"  # b has no run directory for it: the server says so
    step_pid = seen["steps"]["s2"]["pid"]  # type: ignore[index]
    runner.send_signal(signal.SIGKILL)
    # The whole host goes: its step too (a real dead host takes its processes along).
    os.killpg(step_pid, signal.SIGKILL)
    runner.wait()
    assert wait_dead(step_pid)
    killed = time.monotonic()
    while (st := b.status())["status"] == "running":
        assert time.monotonic() - killed < 5, "the dead coordinator was not seen in 5 s"
        time.sleep(0.05)
    took = time.monotonic() - killed
    assert st["status"] == "crashed", st
    assert st["steps"]["s2"]["status"] == "interrupted"  # type: ignore[index]
    print(f"crash seen from the other host after {took:.2f}s")
    (tmp_path / "release").touch()
    res = b.cli("resume", "-q", str(st["run_id"]))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "ran").read_text().split() == ["s1", "s2-start", "s2-start", "s2", "s3"]
    final = b.status()
    assert final["status"] == "succeeded" and final["run_id"] == st["run_id"]


def test_a_run_being_resumed_on_one_host_is_not_resumed_on_another(
    pg_url: str, tmp_path: Path
) -> None:
    a, b = Host(tmp_path, "a", pg_url), Host(tmp_path, "b", pg_url)
    flow = tmp_path / "crashy.yaml"
    flow.write_text(CRASHY)
    runner = a.start("run", "-q", str(flow))
    _wait_for(tmp_path / "started", runner)
    run_id = str(b.status()["run_id"])
    res = b.cli("resume", "-q", run_id)
    assert res.returncode == EXIT_LOCKED and "still running" in res.stderr, res.stderr
    (tmp_path / "release").touch()
    assert runner.wait(timeout=30) == 0


# -- bad URLs, a server that is down, the password -----------------------------------------


@pytest.mark.parametrize(("url", "code", "says"), [
    ("postgresql://flowsh:s3cret-pw@127.0.0.1:1/test", EXIT_STATE, "cannot connect"),
    ("postgresql://no_such_role:s3cret-pw@127.0.0.1:5432/test", EXIT_STATE, "no_such_role"),
    ("postgresql://postgres:s3cret-pw@127.0.0.1:5432/no_such_db", EXIT_STATE, "no_such_db"),
    ("postgresql://postgres:s3cret-pw@[::1/test", EXIT_USAGE, "state URL"),
    ("postgresql://postgres:s3cret-pw@127.0.0.1/test?bogus=1", EXIT_USAGE, "bogus"),
    ("postgres://postgres@127.0.0.1/test?password=s3cret-pw&port=1", EXIT_STATE, "cannot connect"),
])
def test_bad_url_or_server_down_is_one_line_with_the_password_masked(
    url: str, code: int, says: str, tmp_path: Path
) -> None:
    host = Host(tmp_path, "a", url)
    for args in (("history",), ("status",), ("run", "flow.yaml")):
        (host.dir / "flow.yaml").write_text("steps: [{name: a, run: 'true'}]\n")
        res = host.cli(*args)
        assert res.returncode == code, (args, res.stderr)
        assert says in res.stderr and "***" in res.stderr, res.stderr
        assert "s3cret-pw" not in res.stderr + res.stdout
        assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr


def test_missing_psycopg_says_what_to_install(pg_url: str, tmp_path: Path) -> None:
    code = ("import sys; sys.modules['psycopg'] = None; sys.argv = ['flowsh', 'history']; "
            "from flowsh.__main__ import main; main()")
    res = subprocess.run([sys.executable, "-c", code], env={**os.environ, "FLOWSH_STATE": pg_url},
                         capture_output=True, text=True, check=False, timeout=60)
    assert res.returncode == EXIT_USAGE
    assert "pip install 'flowsh[postgresql]'" in res.stderr and res.stderr.count("\n") == 1


def test_the_password_reaches_no_step_log_or_record(pg_url: str, tmp_path: Path) -> None:
    url = pg_url.replace("postgres@", "postgres:s3cret-pw@")  # trust auth: any password works
    host = Host(tmp_path, "a", url)
    (host.dir / "flow.yaml").write_text(
        "steps: [{name: a, run: 'echo \"state=$FLOWSH_STATE\"; env > env.txt'}]\n")
    res = host.cli("run", "flow.yaml")
    assert res.returncode == 0, res.stderr
    env = (host.dir / "env.txt").read_text()
    assert "s3cret-pw" not in env and f"FLOWSH_STATE={pg_url}" in env
    status = host.cli("status", "--json").stdout
    logs = "".join(p.read_text() for p in (host.dir / "home").rglob("*.log"))
    assert "state=postgresql://postgres@" in logs
    # A failed run prints pasteable `--state …` commands: without the password.
    (host.dir / "fail.yaml").write_text("steps: [{name: a, run: 'exit 3'}]\n")
    failed = host.cli("run", "fail.yaml")
    assert failed.returncode == 1 and "flowsh resume" in failed.stderr + failed.stdout
    given = host.cli("status", "--state", url)  # on the command line this time
    assert given.returncode == 0 and "resume:  flowsh resume" in given.stdout, given.stdout
    with psycopg.connect(pg_url) as conn:
        rows = str(conn.execute("SELECT * FROM flowsh_runs, flowsh_steps").fetchall())
    for text in (res.stdout, res.stderr, status, logs, rows, failed.stdout, failed.stderr,
                 given.stdout, given.stderr):
        assert "s3cret-pw" not in text


# -- the server drops a runner's lock connections (a restart, pg_terminate_backend) --------

HELD = """
name: held
steps:
  - {name: a, run: 'touch started; until [ -e go ]; do sleep 0.05; done'}
  - {name: b, run: 'true', needs: [a]}
"""


@pytest.mark.parametrize("taken_meanwhile", [False, True])
def test_a_dropped_lock_connection_is_taken_again_or_the_run_stops(
    pg_url: str, tmp_path: Path, taken_meanwhile: bool
) -> None:
    from flowsh.builtin.pg_locks import advisory_key

    a = Host(tmp_path, "a", pg_url)
    flow = tmp_path / "held.yaml"
    flow.write_text(HELD)
    runner = a.start("run", "-q", str(flow))
    _wait_for(tmp_path / "started", runner)
    run_id = str(a.status()["run_id"])
    schema = pg_url.rsplit("%3D", 1)[1]
    keys = [advisory_key("runner", schema, run_id), advisory_key("workflow", schema, "held")]
    with contextlib.ExitStack() as stack:
        conn = stack.enter_context(psycopg.connect(PG_SERVER, autocommit=True))
        pids = [r[0] for r in conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND "
            "(classid::bigint << 32 | objid::bigint) = ANY(%s)", (keys,)).fetchall()]
        assert len(pids) == 2, pids
        got = threading.Event()
        if taken_meanwhile:
            # Another coordinator resumes the run in the gap. The runner's watcher takes a
            # dropped lock again within milliseconds, so the other one waits for the lock
            # before it is dropped: the server hands it over as the session ends.
            other = stack.enter_context(psycopg.connect(PG_SERVER, autocommit=True))

            def take() -> None:
                other.execute("SELECT pg_advisory_lock(%s)", (keys[0],))
                got.set()

            threading.Thread(target=take, daemon=True).start()
            end = time.monotonic() + 5
            while not conn.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                    "AND (classid::bigint << 32 | objid::bigint) = %s", (keys[0],)).fetchone()[0]:
                assert time.monotonic() < end, "the other coordinator never queued"
                time.sleep(0.02)
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        if taken_meanwhile:
            assert got.wait(5), "the terminated session kept its lock"
        (tmp_path / "go").touch()
        _, err = runner.communicate(timeout=60)
    if taken_meanwhile:
        assert runner.returncode == EXIT_STATE, err
        assert "another coordinator holds it now" in err
    else:
        assert runner.returncode == 0, err
        assert "took the lock again" in err
        assert a.status(run_id)["status"] == "succeeded"


# -- the server goes away for a while (a restart, a failover) -------------------------------


class Proxy:
    """A TCP relay to the server that can vanish and come back on the same port: the
    coordinator's connections break as in a server restart, and no other test's do."""

    def __init__(self) -> None:
        import socket

        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.socks: list[socket.socket] = []
        self.listener: socket.socket | None = None

    def start(self) -> None:
        import socket
        import threading

        self.listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)

        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)

        def serve(listener: socket.socket) -> None:
            while True:
                try:
                    client, _ = listener.accept()
                except OSError:
                    return
                upstream = socket.create_connection(("127.0.0.1", 5432))
                self.socks += [client, upstream]
                threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
                threading.Thread(target=pump, args=(upstream, client), daemon=True).start()

        threading.Thread(target=serve, args=(self.listener,), daemon=True).start()

    def stop(self) -> None:
        import socket

        assert self.listener is not None
        self.listener.close()
        for s in self.socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self.socks.clear()


def test_a_server_away_for_seconds_stops_the_run_and_one_away_for_long_stops_it(
    pg_url: str, tmp_path: Path
) -> None:
    proxy = Proxy()
    proxy.start()
    url = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    a, b = Host(tmp_path, "a", url), Host(tmp_path, "b", pg_url)
    a.env["FLOWSH_PG_RECONNECT"] = "4"  # how long a transition waits for the server
    flow = tmp_path / "held.yaml"
    flow.write_text(HELD)
    runner = a.start("run", "-q", str(flow))
    _wait_for(tmp_path / "started", runner)
    # The server away for a moment (a restart) took the run's locks along: another host
    # may read the run crashed and resume it meanwhile, so the runner stops its step at
    # once (it waits for `go`, never touched: only the runner can end it) and exits 3.
    proxy.stop()
    time.sleep(1.0)  # the server's time away (a restart), not a wait for something
    proxy.start()
    _, err = runner.communicate(timeout=60)
    assert runner.returncode == EXIT_STATE, err  # it ended: its step was stopped
    st = b.status()
    assert st["status"] in ("crashed", "interrupted"), st
    (tmp_path / "go").touch()
    res = b.cli("resume", "-q", str(st["run_id"]))
    assert res.returncode == 0, res.stderr
    assert b.status()["status"] == "succeeded"
    # Away for longer than FLOWSH_PG_RECONNECT: the run stops (exit 3), and once the server is
    # back another host sees it crashed and resumes it.
    for f in ("started", "go"):
        (tmp_path / f).unlink()
    runner = a.start("run", "-q", str(flow))
    _wait_for(tmp_path / "started", runner)
    proxy.stop()
    (tmp_path / "go").touch()
    _, err = runner.communicate(timeout=60)
    assert runner.returncode == EXIT_STATE, err
    assert "lost a lock of this run" in err or "cannot connect" in err, err
    st = b.status()
    assert st["status"] == "crashed", st
    res = b.cli("resume", "-q", str(st["run_id"]))
    assert res.returncode == 0, res.stderr
    assert b.status()["status"] == "succeeded"


def test_a_scheduled_job_carries_the_state_url_without_its_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flowsh.schedjob import carried_env

    monkeypatch.setenv("FLOWSH_STATE", "postgresql://flowsh:s3cret-pw@db.internal/flowsh")
    assert dict(carried_env())["FLOWSH_STATE"] == "postgresql://flowsh@db.internal/flowsh"


def test_call_links_round_trip_with_no_migration(pg_url: str) -> None:
    # RunRecord.parent_run/parent_step and StepRecord.child_run (`call:`) came after schema
    # 1: the jsonb records carry them; older records read back without them.
    import importlib

    cases = importlib.import_module("tests.unit.backend_cases")
    b = open_backend(pg_url)
    try:
        cases.call_links(b)
    finally:
        b.close()


def test_a_schema_of_an_older_flowsh_is_brought_up_to_date(pg_url: str) -> None:
    """Each migration runs once, in order, on a schema an older flowsh made (here the
    first one only), and its runs stay readable."""
    from flowsh.builtin.state_postgresql import MIGRATIONS

    schema = pg_url.rsplit("%3D", 1)[1]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        conn.execute(MIGRATIONS[0])
        conn.execute("CREATE TABLE flowsh_meta (one boolean PRIMARY KEY DEFAULT true "
                     "CHECK (one), version int NOT NULL)")
        conn.execute("INSERT INTO flowsh_meta (version) VALUES (1)")
    b = open_backend(pg_url)
    b.create_run(_record("r1"))
    assert [r.run_id for r in b.list_runs("w", statuses=frozenset({"running"}))] == ["r1"]
    b.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        version = conn.execute("SELECT version FROM flowsh_meta").fetchall()
        indexes = {r[0] for r in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = %s", (schema,))}
    assert version == [(SCHEMA_VERSION,)] == [(len(MIGRATIONS),)]
    assert {"flowsh_runs_by_workflow_status", "flowsh_runs_by_status",
            "flowsh_pool_holders_pkey"} <= indexes
