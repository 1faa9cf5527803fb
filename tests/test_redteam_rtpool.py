"""Red-team reproducers for pools (docs/semantics.md POOL), above all the cross-host fence
of POOL-8 (flowsh_pool_holders, d34d85f). Each test failed on main at d34d85f.

Two hosts are two coordinators with FLOWSH_HOMEs of their own sharing one PostgreSQL schema
(as tests/test_pools_postgresql.py); real `flowsh` processes, real kills, the machine's
server on loopback.

Findings (all fixed on branch rtpool; none open):
  F1  HIGH runner killed alone: its running step's slot free on other hosts
  F1b MED  ... again once the pool connection had been renewed after a drop
  F2  MED  holder taking its slot back beaten by a waiting host's fence look
  F3  HIGH every session of the holder dropped at once: another host in beside it
  F4  MED  holder row the server missed erasing barred the slot for the whole run
  F5  MED  waiting run failed (exit 3) when its pool connection was dropped
  F6  LOW  waiting run failed "lost a lock" when dropped while only looking
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import pg_server_or_skip
from tests.conftest import poll as _poll
from tests.test_pools_e2e import FLOWSH
from tests.test_pools_postgresql import host_env, start_waiter

psycopg = pg_server_or_skip()

# Findings still open: strict xfails, so that a fix shows as an unexpected pass.
OPEN = frozenset({
})


@pytest.fixture(autouse=True)
def _open_findings(request: pytest.FixtureRequest) -> None:
    if request.node.name in OPEN:
        request.applymarker(pytest.mark.xfail(strict=True, reason="rtpool finding still open"))


def _lock_holders(url: str, key: int) -> list[int]:
    """Server pids of the sessions holding advisory lock `key` (keys are the schema's own:
    the server's other users, other tests and helpers, never count)."""
    with psycopg.connect(url, autocommit=True) as conn:
        return [r[0] for r in conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid = %s::bigint::oid AND objid = %s::bigint::oid AND objsubid = 1",
            ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF)).fetchall()]


def _holder_run(url: str, key: int) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT run_id FROM flowsh_pool_holders WHERE key = %s",
                           (key,)).fetchone()
    assert row is not None
    return str(row[0])


def _local_ports(pid: int) -> set[int]:
    """The local TCP ports of process `pid`'s sockets (its server sessions' client ports)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[9] in inodes:
                    ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def _keeper_ports(runner: int) -> set[int]:
    """The local ports of the sockets the runner's slot keepers hold."""
    ports: set[int] = set()
    for task in Path(f"/proc/{runner}/task").glob("*"):
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                with contextlib.suppress(OSError):
                    if b"flowsh-pool-keeper" in Path(f"/proc/{child}/cmdline").read_bytes():
                        ports |= _local_ports(int(child))
    return ports


def _client_port(conn: psycopg.Connection[tuple[int]], pid: int) -> int | None:
    row = conn.execute("SELECT client_port FROM pg_stat_activity WHERE pid = %s",
                       (pid,)).fetchone()
    return None if row is None else row[0]


def _runner_key(url: str, run_id: str) -> int:
    from flowsh.builtin.pg_locks import advisory_key

    return advisory_key("runner", url.rsplit("%3D", 1)[1], run_id)


# A step that says it runs (its process group in $OUT/NAME.pgid), then runs until
# $OUT/NAME.stop appears: the test decides when it ends.
UNTIL_STOPPED = ('echo $$ > "$OUT/$FLOWSH_WORKFLOW.tmp"; '
                 'mv "$OUT/$FLOWSH_WORKFLOW.tmp" "$OUT/$FLOWSH_WORKFLOW.pgid"; '
                 'while [ ! -e "$OUT/$FLOWSH_WORKFLOW.stop" ]; do sleep 0.05; done')


@contextlib.contextmanager
def _holding(tmp_path: Path, url: str, out: Path, host: str = "east",
             pool: str = "db") -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Host `host` runs a workflow of that name whose one step holds slot 0 of a pool of 1
    until $OUT/<host>.stop exists; yields (its runner, its step's process group)."""
    flow = tmp_path / f"{host}.yaml"
    flow.write_text(f"name: {host}\npools: {{{pool}: 1}}\nsteps:\n"
                    f"  - {{name: h, pool: {pool}, run: {json.dumps(UNTIL_STOPPED)}}}\n")
    err = open(tmp_path / f"{host}.err", "w")  # noqa: SIM115 - closed below
    runner = subprocess.Popen([*FLOWSH, "run", str(flow)], env=host_env(tmp_path, host, url, out),
                              stdout=subprocess.DEVNULL, stderr=err)
    step = 0
    try:
        _poll((out / f"{host}.pgid").is_file, f"{host}'s step to start")
        step = int((out / f"{host}.pgid").read_text())
        yield runner, step
    finally:
        (out / f"{host}.stop").touch()
        runner.kill()
        runner.wait()
        if step:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(step, signal.SIGKILL)
        err.close()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


# --- F1: a runner killed alone -------------------------------------------------------------

def test_a_runner_killed_alone_keeps_its_running_steps_slot_on_everyhost_env(
        tmp_path: Path, pg_url: str) -> None:
    """HIGH. POOL-1: "a runner killed alone (`kill -9 PID`) MUST NOT free the slot its
    still-running step uses". On one host the keeper keeps the slot file locked, but the
    advisory lock lived on the runner's pool connection only: the server dropped it with
    the runner, the holder row names a run no longer alive, so another host took the slot
    and ran its step beside the orphan still running — two steps in a pool of one.
    Expected: the other host waits until the orphan ends (then gets the slot)."""
    out = tmp_path / "out"
    out.mkdir()
    with _holding(tmp_path, pg_url, out) as (runner, step):
        alive = _runner_key(pg_url, _holder_run(pg_url, _slot_key(pg_url)))
        runner.kill()  # SIGKILL of the runner alone: its step runs on
        runner.wait()
        # The run is dead as far as the server knows (its liveness session is gone).
        _poll(lambda: not _lock_holders(pg_url, alive), "the dead runner's session to go")
        assert _group_alive(step)
        west, err = start_waiter(tmp_path, pg_url, out)
        try:
            assert not (out / "ran").exists(), "two steps ran at once in a pool of one"
            (out / "east.stop").touch()  # the orphan ends: its keeper, and the slot, go
            assert west.wait(timeout=60) == 0, err.read_text()
            assert (out / "ran").exists()
        finally:
            west.kill()
            west.wait()


# --- F2: the fence itself makes a holder think it lost its slot ----------------------------

def _slot_key(url: str, name: str = "db/0") -> int:
    from flowsh.builtin.pg_locks import advisory_key

    return advisory_key("pool", url.rsplit("%3D", 1)[1], name)


def test_a_holder_taking_its_slot_back_is_not_beaten_by_a_fencing_reader(
        tmp_path: Path, pg_url: str) -> None:
    """MED. The fence of d34d85f reads the holder row WHILE holding the slot's advisory
    lock (pg_try_advisory_lock, read, unlock). When the server drops the holder's pool
    connection (pg_terminate_backend), its watcher takes the lock again at once — and
    finds it held by a waiting host that is only looking (a few round trips every 0.1 s:
    a real chance with a remote server). It then fails its run "lost a lock" and stops
    its step, though nobody took the slot. Here the looking host is a session granted the
    lock as the drop frees it and letting it go a moment later, as a fence does on seeing
    the row name a live run. Expected: the holder takes its slot back; its run succeeds."""
    import threading

    out = tmp_path / "out"
    out.mkdir()
    key = _slot_key(pg_url)
    # Sessions queued for the slot's lock (the server's other users are not counted).
    waiting = ("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
               "AND classid = %s::bigint::oid AND objid = %s::bigint::oid AND objsubid = 1")
    split = ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF)
    with _holding(tmp_path, pg_url, out) as (runner, _step), \
            psycopg.connect(pg_url, autocommit=True) as fencer, \
            psycopg.connect(pg_url, autocommit=True) as admin:
        def look() -> None:
            fencer.execute("SELECT pg_advisory_lock(%s)", (key,))
            # The fence's read: the row names east, alive; it lets go.
            row = fencer.execute("SELECT run_id FROM flowsh_pool_holders WHERE key = %s",
                                 (key,)).fetchone()
            assert row is not None
            admin_wait = psycopg.connect(pg_url, autocommit=True)
            with admin_wait:  # a loaded host's few round trips: until east has looked
                _poll(lambda: "lost a lock" in (tmp_path / "east.err").read_text()
                      or runner.poll() is not None
                      or admin_wait.execute(waiting, split).fetchone() != (0,),
                      "east to look", 10)
            fencer.execute("SELECT pg_advisory_unlock(%s)", (key,))

        queued = threading.Thread(target=look)
        queued.start()
        _poll(lambda: admin.execute(waiting, split).fetchone() == (1,), "the fencer to queue")
        pids = _lock_holders(pg_url, key)
        assert len(pids) == 1, pids
        admin.execute("SELECT pg_terminate_backend(%s)", (pids[0],))
        queued.join(timeout=30)
        (out / "east.stop").touch()
        code = runner.wait(timeout=60)
        text = (tmp_path / "east.err").read_text()
        assert code == 0, text
        assert "lost a lock" not in text, text


# --- F3: every session of the holder dropped at once ----------------------------------------

def test_a_holder_whose_every_session_the_server_dropped_keeps_its_slot(
        tmp_path: Path, pg_url: str) -> None:
    """HIGH. The fence asks whether the row's run is alive by its liveness lock. A server
    that drops ALL the holder's sessions at once (an admin's `pg_terminate_backend` of
    every flowsh session, a pooler's reset, a failover) frees the slot's lock and the
    liveness lock together: until the holder's watcher has taken its liveness lock back,
    a waiting host reads the run as dead, takes the slot, and starts its step beside the
    holder's (which then fails 'lost a lock' a moment later). Here the drop is repeated
    until that race is run often enough to be seen. Expected: the waiting host waits
    for as long as the holder's step runs; the holder's run succeeds."""
    from flowsh.builtin.pg_locks import advisory_key

    out = tmp_path / "out"
    out.mkdir()
    schema = pg_url.rsplit("%3D", 1)[1]
    slot = _slot_key(pg_url)
    with _holding(tmp_path, pg_url, out) as (runner, _step), \
            psycopg.connect(pg_url, autocommit=True) as admin:
        west, werr = start_waiter(tmp_path, pg_url, out)
        try:
            row = admin.execute("SELECT run_id FROM flowsh_pool_holders WHERE key = %s",
                                (slot,)).fetchone()
            assert row is not None
            keys = (advisory_key("runner", schema, str(row[0])), slot)

            # West's own look at the slot (its fence) holds the lock a moment: only east's
            # sessions are dropped (F4 is west's drop).
            def holders() -> list[int]:
                ports = _local_ports(west.pid)
                return [pid for key in keys for pid in _lock_holders(pg_url, key)
                        if _client_port(admin, pid) not in ports]

            for _ in range(25):
                pids = holders()
                if len(pids) != 2 or (out / "ran").exists() or runner.poll() is not None:
                    break
                admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) pid",
                              (pids,))
                _poll(lambda p=pids: (len(holders()) == 2 and not set(holders()) & set(p))
                      or runner.poll() is not None or (out / "ran").exists(),
                      "the holder to take its locks back", 30)
            assert not (out / "ran").exists(), "two steps ran at once in a pool of one"
            assert runner.poll() is None, (tmp_path / "east.err").read_text()
            (out / "east.stop").touch()
            assert runner.wait(timeout=60) == 0, (tmp_path / "east.err").read_text()
            assert west.wait(timeout=60) == 0, werr.read_text()
        finally:
            west.kill()
            west.wait()


# --- F4: a holder row left behind by a release the server missed ---------------------------

def test_a_row_left_by_a_failed_release_does_not_block_other_hosts_for_the_run(
        tmp_path: Path, pg_url: str) -> None:
    """MED. A release erases the holder row, "kept when the server is away: other hosts
    then wait until this run ends". For a run that goes on for hours with other steps,
    that is hours of a pool slot nobody uses and no other host may take (the run's own
    later steps may: the row names it). Here the erase fails once (the table is locked by
    an admin and the run's connection is cut while it waits, FLOWSH_PG_RECONNECT=0), the
    run goes on with an unpooled step. Expected: the row is erased once the server
    answers again, and the waiting host gets the slot while the run still runs."""
    import threading

    out = tmp_path / "out"
    out.mkdir()
    flow = tmp_path / "east.yaml"
    flow.write_text("name: east\npools: {db: 1}\nsteps:\n"
                    "  - {name: p, pool: db, run: 'until [ -e \"$OUT/p.stop\" ]; do sleep 0.05;"
                    " done'}\n"
                    f"  - {{name: later, needs: [p], run: {json.dumps(UNTIL_STOPPED)}}}\n")
    env = {**host_env(tmp_path, "east", pg_url, out), "FLOWSH_PG_RECONNECT": "0"}
    eerr = tmp_path / "east.err"
    wflow = tmp_path / "west.yaml"
    wflow.write_text("pools: {db: 1}\nsteps:\n  - {name: w, pool: db, run: "
                     + json.dumps('touch "$OUT/ran"') + "}\n")
    werr = tmp_path / "west.err"
    slot = _slot_key(pg_url)
    with open(eerr, "w") as efh, open(werr, "w") as wfh, \
            psycopg.connect(pg_url, autocommit=True) as admin, \
            psycopg.connect(pg_url) as locker:
        east = subprocess.Popen([*FLOWSH, "run", str(flow)], env=env,
                                stdout=subprocess.DEVNULL, stderr=efh)
        west = None
        try:
            _poll(lambda: _lock_holders(pg_url, slot), "east to hold the slot")
            locker.execute("LOCK TABLE flowsh_pool_holders IN ACCESS EXCLUSIVE MODE")
            (out / "p.stop").touch()  # p ends: its release waits for the table
            blocked = ("SELECT pid FROM pg_locks WHERE locktype = 'relation' AND NOT granted "
                       "AND relation = 'flowsh_pool_holders'::regclass")
            _poll(lambda: admin.execute(blocked).fetchall(), "the release to wait")
            admin.execute(f"SELECT pg_terminate_backend(pid) FROM ({blocked}) b")
            locker.rollback()
            _poll((out / "east.pgid").is_file, "the run to go on with its next step")
            _poll(lambda: not _lock_holders(pg_url, slot), "the slot's lock to be let go")
            west = subprocess.Popen([*FLOWSH, "run", str(wflow)],
                                    env=host_env(tmp_path, "west", pg_url, out),
                                    stdout=subprocess.DEVNULL, stderr=wfh)
            threading.Thread(target=west.wait, daemon=True).start()
            _poll(lambda: west.poll() is not None, "west to get the slot while east runs", 30)
            assert west.returncode == 0, werr.read_text()
            assert east.poll() is None, eerr.read_text()
        finally:
            (out / "east.stop").touch()
            (out / "p.stop").touch()
            assert east.wait(timeout=60) == 0, eerr.read_text()
            if west is not None:
                west.kill()
                west.wait()


# --- F5: a waiting run's pool connection dropped ---------------------------------------------

def test_a_waiting_run_survives_its_pool_connection_being_dropped(
        tmp_path: Path, pg_url: str) -> None:
    """MED. A run waiting for a slot asks the server every 0.1 s on its pool connection.
    When the server drops that connection (pg_terminate_backend, a pooler's cut), the
    watcher opens a new one at once — but the waiting loop may ask first, on the dead
    connection, and psycopg's error went up as a state error: the run failed (exit 3)
    though it held nothing and nobody took anything from it. Here the drop is repeated
    until that race is seen. Expected: the run waits on, and runs once the slot is free."""
    out = tmp_path / "out"
    out.mkdir()
    with _holding(tmp_path, pg_url, out) as (_runner, _step), \
            psycopg.connect(pg_url, autocommit=True) as admin:
        west, werr = start_waiter(tmp_path, pg_url, out)
        try:

            def west_pool() -> list[int]:
                ports = _local_ports(west.pid)
                return [r[0] for r in admin.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'flowsh pool%'"
                ).fetchall() if _client_port(admin, r[0]) in ports]

            for _ in range(40):
                pids = west_pool()
                if west.poll() is not None:
                    break
                if pids:
                    done = admin.execute("SELECT pg_terminate_backend(pid) FROM "
                                         "unnest(%s::int[]) pid", (pids,)).fetchall()
                    assert done == [(True,)] * len(pids), done
                _poll(lambda p=pids: (west_pool() and not set(west_pool()) & set(p))
                      or west.poll() is not None, "west's new pool connection", 30)
            assert west.poll() is None, werr.read_text()
            (out / "east.stop").touch()
            assert west.wait(timeout=60) == 0, werr.read_text()
        finally:
            west.kill()
            west.wait()


def test_a_runner_killed_alone_after_its_pool_connection_was_renewed_keeps_the_slot(
        tmp_path: Path, pg_url: str) -> None:
    """MED (F1 again). The slot's keeper holds the pool connection's socket, so a runner
    killed alone keeps its running step's slot on every host — but only the socket it was
    given: once the server has dropped that connection and the runner has taken the slot
    back on a new one, the keeper holds a dead socket, and a kill -9 of the runner alone
    frees the slot for other hosts while its step runs on. Expected: as before the drop."""
    out = tmp_path / "out"
    out.mkdir()
    slot = _slot_key(pg_url)
    with _holding(tmp_path, pg_url, out) as (runner, step):
        old = _lock_holders(pg_url, slot)
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (old[0],))
        _poll(lambda: _lock_holders(pg_url, slot) not in ([], old), "the slot taken back")
        _poll(lambda: "took the lock again" in (tmp_path / "east.err").read_text(),
              "the runner to say so")
        # The keeper takes the new connection at the run loop's next pass (a wake-up after
        # the watcher's reconnect): the kill comes once it holds it. Killed before, in that
        # pass's milliseconds (seconds at load 30), the runner frees the slot; that window
        # is in the closing note.
        with psycopg.connect(pg_url, autocommit=True) as admin:
            _poll(lambda: any(_client_port(admin, p) in _keeper_ports(runner.pid)
                              for p in _lock_holders(pg_url, slot)),
                  "the slot's keeper to hold the new connection")
        alive = _runner_key(pg_url, _holder_run(pg_url, slot))
        runner.kill()  # SIGKILL of the runner alone: its step runs on
        runner.wait()
        _poll(lambda: not _lock_holders(pg_url, alive), "the dead runner's session to go")
        assert _group_alive(step)
        west, err = start_waiter(tmp_path, pg_url, out)
        try:
            # Past the dead-holder grace (5 s): a slot only its row guards is taken then.
            since = time.monotonic()
            _poll(lambda: west.poll() is not None or time.monotonic() - since > 7,
                  "the other host to wait past the grace", 30)
            assert not (out / "ran").exists(), "two steps ran at once in a pool of one"
            (out / "east.stop").touch()
            assert west.wait(timeout=60) == 0, err.read_text()
        finally:
            west.kill()
            west.wait()


def test_a_waiting_run_only_looking_at_a_slot_is_not_failed_by_a_drop(
        tmp_path: Path, pg_url: str) -> None:
    """LOW. A waiting host looks at a free slot's holder row while holding its lock (the
    fence). The slot counted as held by it from the lock on, so a drop of its pool
    connection during the look made its watcher take it back, and when a third session
    had been granted the lock meanwhile, fail the waiting run "lost a lock" — a run that
    held nothing. Here east is a session holding run r-east's liveness lock, named by the
    row; the look is frozen by an admin's lock on the table. Expected: west waits on."""
    out = tmp_path / "out"
    out.mkdir()
    schema = pg_url.rsplit("%3D", 1)[1]
    from flowsh.store import open_backend

    open_backend(pg_url).close()
    key = _slot_key(pg_url)
    flow = tmp_path / "west.yaml"
    flow.write_text("pools: {db: 1}\nsteps:\n  - {name: w, pool: db, run: "
                    + json.dumps('touch "$OUT/ran"') + "}\n")
    err = tmp_path / "west.err"
    waiting = ("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
               "AND classid = %s::bigint::oid AND objid = %s::bigint::oid AND objsubid = 1")
    split = ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF)
    import threading

    with psycopg.connect(pg_url, autocommit=True) as east, \
            psycopg.connect(pg_url, autocommit=True) as admin, \
            psycopg.connect(pg_url, autocommit=True) as third, \
            psycopg.connect(pg_url) as locker, open(err, "w") as fh:
        from flowsh.builtin.pg_locks import advisory_key

        east.execute("SELECT pg_advisory_lock(%s)", (advisory_key("runner", schema, "r-east"),))
        east.execute("INSERT INTO flowsh_pool_holders (key, run_id, since) VALUES (%s, %s, 0)",
                     (key, "r-east"))
        west = subprocess.Popen([*FLOWSH, "run", str(flow)],
                                env=host_env(tmp_path, "west", pg_url, out),
                                stdout=subprocess.DEVNULL, stderr=fh)
        queued = threading.Thread(
            target=lambda: third.execute("SELECT pg_advisory_lock(%s)", (key,)))
        try:
            _poll(lambda: "w: waiting for pool db" in err.read_text() or west.poll() is not None,
                  "west to wait")
            locker.execute("LOCK TABLE flowsh_pool_holders IN ACCESS EXCLUSIVE MODE")
            _poll(lambda: _lock_holders(pg_url, key) or west.poll() is not None,
                  "west's look to hold the slot's lock")
            looking = _lock_holders(pg_url, key)
            queued.start()
            _poll(lambda: admin.execute(waiting, split).fetchone() == (1,), "the third to queue")
            admin.execute("SELECT pg_terminate_backend(%s)", (looking[0],))
            queued.join(timeout=30)
            locker.rollback()
            _poll(lambda: "took the lock again" in err.read_text() or west.poll() is not None,
                  "west's watcher to act")
            assert west.poll() is None, err.read_text()
            third.execute("SELECT pg_advisory_unlock(%s)", (key,))
        finally:
            with contextlib.suppress(Exception):
                locker.rollback()
            east.close()  # r-east ends: the slot is west's after the grace
        try:
            assert west.wait(timeout=60) == 0, err.read_text()
        finally:
            west.kill()
            west.wait()
