"""Pools across hosts through PostgreSQL advisory locks (docs/semantics.md POOL-8): two
coordinators with FLOWSH_HOMEs of their own (two hosts, sharing no slot file) and one state
database hold a pool of 1 one step at a time; a SIGKILLed holder frees its slot for the
other host. Against the machine's real server, as tests/test_state_postgresql.py."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path

from tests.conftest import pg_server_or_skip
from tests.test_pools_e2e import FLOWSH, HELD, _most_at_once, _poll

psycopg = pg_server_or_skip()


def host_env(root: Path, name: str, url: str, out: Path) -> dict[str, str]:
    """The environment of a coordinator on host `name`: a FLOWSH_HOME of its own, the
    shared state database, and OUT for its steps' files."""
    home = root / name
    home.mkdir(exist_ok=True)
    return {**os.environ, "FLOWSH_HOME": str(home), "XDG_CONFIG_HOME": str(home / "config"),
            "FLOWSH_STATE": url, "OUT": str(out)}


def start_waiter(root: Path, url: str, out: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """Host "west": a run of one step `w` in pool db (it touches $OUT/ran), started and
    polled until it waits for the slot (or has ended). Returns it and its stderr file; the
    caller kills it."""
    flow = root / "west.yaml"
    flow.write_text("pools: {db: 1}\nsteps:\n  - {name: w, pool: db, run: "
                    + json.dumps('touch "$OUT/ran"') + "}\n")
    err = root / "west.err"
    with open(err, "w") as fh:
        west = subprocess.Popen([*FLOWSH, "run", str(flow)],
                                env=host_env(root, "west", url, out),
                                stdout=subprocess.DEVNULL, stderr=fh)
    try:
        _poll(lambda: "w: waiting for pool db" in err.read_text() or west.poll() is not None,
              "the other host to wait")
    except BaseException:
        west.kill()
        west.wait()
        raise
    return west, err


def test_two_hosts_share_a_pool_of_one(tmp_path: Path, pg_url: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    procs = []
    for name in ("east", "west"):
        flow = tmp_path / f"{name}.yaml"
        flow.write_text(f"name: {name}\npools: {{db: 1}}\nsteps:\n" + "".join(
            f"  - {{name: s{i}, pool: db, needs: [], run: {json.dumps(HELD)}}}\n"
            for i in range(2)))
        procs.append(subprocess.Popen([*FLOWSH, "run", str(flow)],
                                      env=host_env(tmp_path, name, pg_url, out),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
    assert _most_at_once(out) == (4, 1)


def test_a_sigkilled_holder_on_one_host_frees_the_slot_on_another(
        tmp_path: Path, pg_url: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    hold = tmp_path / "hold.yaml"
    hold.write_text("pools: {db: 1}\nsteps:\n  - {name: h, pool: db, run: "
                    + json.dumps('echo $$ > "$OUT/pgid.tmp"; mv "$OUT/pgid.tmp" "$OUT/pgid"; '
                                 'sleep 300') + "}\n")
    # A group of its own: the whole group dies below (POOL-1: a runner killed alone
    # keeps its running step's slot, on every host: tests/test_redteam_rtpool.py).
    first = subprocess.Popen([*FLOWSH, "run", str(hold)],
                             env=host_env(tmp_path, "east", pg_url, out),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    step = 0
    try:
        _poll((out / "pgid").is_file, "the holder's step to start")
        step = int((out / "pgid").read_text())
        second, err = start_waiter(tmp_path, pg_url, out)
        assert second.poll() is None, err.read_text()
        # SIGKILL of the runner's group (runner and keeper; the step, in a group of its
        # own, runs on): the server drops the runner's sessions, and its locks
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        assert second.wait(timeout=60) == 0, err.read_text()
        assert (out / "ran").exists()
    finally:
        first.kill()
        if step:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(step, signal.SIGKILL)


def test_a_slot_whose_live_holder_lost_its_lock_is_not_taken(
        tmp_path: Path, pg_url: str) -> None:
    """The gap of POOL-8: a runner whose pool connection the server dropped runs its step
    on until its watcher notices. Here that runner is a session holding run r-east's
    liveness lock, with `flowsh_pool_holders` naming r-east for slot db/0 and the slot's
    advisory lock free, as right after the drop. Another host MUST wait for that run to
    end, not take the free lock and start beside it."""
    from flowsh.builtin.pg_locks import advisory_key
    from flowsh.store import open_backend

    schema = pg_url.rsplit("%3D", 1)[1]
    open_backend(pg_url).close()  # creates the schema and its tables
    out = tmp_path / "out"
    out.mkdir()
    with psycopg.connect(pg_url, autocommit=True) as east:
        east.execute("SELECT pg_advisory_lock(%s)", (advisory_key("runner", schema, "r-east"),))
        east.execute("INSERT INTO flowsh_pool_holders (key, run_id, since) VALUES (%s, %s, 0)",
                     (advisory_key("pool", schema, "db/0"), "r-east"))
        west, err = start_waiter(tmp_path, pg_url, out)
        try:
            assert not (out / "ran").exists(), err.read_text()
            assert west.poll() is None, err.read_text()
        except BaseException:
            west.kill()
            raise
    # r-east's session is gone: its run has ended, and the slot is free.
    assert west.wait(timeout=60) == 0, err.read_text()
    assert (out / "ran").exists()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM flowsh_pool_holders").fetchone() == (0,)
