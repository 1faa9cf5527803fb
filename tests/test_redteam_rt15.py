"""Red-team reproducers for issue 15, run control (selection, pools, `call:`, exit-code
policies). Each test FAILS on main at 0a6c40a; /work/wt/rt15-findings.md has the list.

Real `flowsh` processes, real files, the machine's PostgreSQL on loopback; the exported
script runs under `env -i PATH=/usr/bin:/bin`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import redteam_kit as kit
from tests.conftest import poll as _poll
from tests.conftest import run_cli
from tests.redteam_kit import ok as _ok
from tests.redteam_kit import script as _script

# Findings still open: strict xfails, so that a fix shows as an unexpected pass to be
# removed from here.
OPEN: frozenset[str] = frozenset()

_open_findings = kit.open_findings("rt15", OPEN)


# --- call: ----------------------------------------------------------------------------------

def test_call_cycle_through_a_symlinked_directory_is_refused_not_a_traceback(
        tmp_path: Path) -> None:
    """MEDIUM. `loop -> .` in the workflow's directory and `call: loop/a.yaml` in a.yaml:
    a.yaml calls itself, but calls.child_path uses os.path.abspath (no symlink resolution),
    so each level is a new path (d/loop/a.yaml, d/loop/loop/a.yaml, ...) and
    cycle_message never sees a repeat. check_calls recurses until Python's limit.
    Observed: `flowsh validate` (and `run`) exit 1 with a 1000-frame RecursionError
    traceback. Expected: CALL-6, exit 2 and one line `call cycle: a.yaml -> a.yaml`."""
    (tmp_path / "loop").symlink_to(".")
    flow = tmp_path / "a.yaml"
    flow.write_text("name: a\nsteps:\n  - name: s\n    call: loop/a.yaml\n")
    for cmd in ("validate", "run"):
        r = run_cli(cmd, str(flow), cwd=tmp_path)
        assert r.returncode == 2, (cmd, r.returncode, r.stderr[-500:])
        assert "Traceback" not in r.stderr and "call cycle" in r.stderr, r.stderr[-500:]


def test_call_step_and_its_child_in_one_pool_do_not_deadlock(tmp_path: Path) -> None:
    """MEDIUM. Pool `db: 1`; a `call:` step with `pool: db` whose child's step also has
    `pool: db`. The call step's runner holds slot 0 for the whole child run (POOL-1: the
    attempt is the child run), the child's step waits for slot 0 for ever: `flowsh
    validate` says ok, `flowsh run` hangs ("x: waiting for pool db") until its step's
    timeout or a kill. Nothing in CALL or POOL says so; the call graph is known at
    validate (check_calls loads every child), so it can be refused there, or the child
    could use the slot its call step holds.
    Observed: the call step times out (10s), exit 1, x never ran. Expected: refused
    before anything runs (exit 2, naming the pool) or x runs and the run succeeds."""
    (tmp_path / "parent.yaml").write_text(
        "name: parent\npools: {db: 1}\nsteps:\n"
        "  - {name: c, pool: db, timeout: 10s, call: child.yaml}\n")
    (tmp_path / "child.yaml").write_text(
        "name: child\npools: {db: 1}\nsteps:\n  - {name: x, pool: db, run: echo x >> trace}\n")
    r = run_cli("run", "-q", str(tmp_path / "parent.yaml"), cwd=tmp_path)
    refused = r.returncode == 2 and "db" in r.stderr and not (tmp_path / "trace").exists()
    ran = r.returncode == 0 and (tmp_path / "trace").read_text() == "x\n"
    assert refused or ran, (r.returncode, r.stdout[-300:], r.stderr[-300:])


# --- selection --------------------------------------------------------------------------------

SEL_UTD = """\
name: sel-utd
steps:
  - name: A
    sources: in.txt
    run: echo "X=$(cat in.txt)" >> "$FLOWSH_OUTPUT"
  - name: B
    needs: [A]
    run: echo "$X" >> seen
  - name: C
    needs: [B]
    run: test ! -e failc
"""


def _utd_history(tmp_path: Path, run: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """Run 1 (in=1) succeeds; run 2 (in=2) runs A but fails at C; run 3 succeeds with A
    skipped up to date, handing on X=2 (UPTODATE-2/3: the skip carries run 2's success)."""
    (tmp_path / "in.txt").write_text("1\n")
    _ok(run())
    (tmp_path / "in.txt").write_text("2\n")
    (tmp_path / "failc").touch()
    assert run().returncode == 1
    (tmp_path / "failc").unlink()
    _ok(run())
    assert (tmp_path / "seen").read_text().split() == ["1", "2", "2"]


def test_only_borrows_the_output_an_up_to_date_skip_handed_on(tmp_path: Path) -> None:
    """MEDIUM. After the history above, `flowsh run --only B` hands B X=1: select.borrow
    looks only for a run in which A *succeeded*, so it passes over run 3 (A skipped up
    to date, carrying X=2) and takes run 1's value, one input generation old, with no
    word. in.txt says 2, every later run handed B 2; SELECT-3's "outputs that step had
    in the latest successful run" are X=2 (UPTODATE-3: the skip hands them on "exactly
    as if it had run again").
    Observed: seen ends with 1. Expected: 2 (or a refusal naming A)."""
    flow = tmp_path / "s.yaml"
    flow.write_text(SEL_UTD)
    _utd_history(tmp_path, lambda *a: run_cli("run", "-q", str(flow), *a, cwd=tmp_path))
    _ok(run_cli("run", "-q", str(flow), "--only", "B", cwd=tmp_path))
    assert (tmp_path / "seen").read_text().split()[-1] == "2"


def test_script_only_borrows_the_output_an_up_to_date_skip_handed_on(tmp_path: Path,
                                                                     home: Path) -> None:
    """MEDIUM. The same in the exported script: flowsh_keep_succeeded keeps
    succeeded/A.env only for a step whose state is `succeeded`, so an up-to-date skip
    leaves run 1's X=1 there and `s.sh --only B` hands B a stale value.
    Observed: seen ends with 1. Expected: 2."""
    flow = tmp_path / "s.yaml"
    flow.write_text(SEL_UTD)
    out = tmp_path / "s.sh"
    _ok(run_cli("export", "--bash", str(flow), "-o", str(out)))
    _utd_history(tmp_path, lambda *a: _script(out, "-q", *a, home=home))
    _ok(_script(out, "-q", "--only", "B", home=home))
    assert (tmp_path / "seen").read_text().split()[-1] == "2"


def test_script_keeps_no_secret_value_for_later_selections(tmp_path: Path,
                                                          home: Path) -> None:
    """HIGH. A secret param (`secrets: [dbp]`) copied into an output with a plain name
    (`copy=$dbp`). After a successful run the exported script's flowsh_keep_succeeded
    writes `copy=<the secret>` in clear to $FLOWSH_HOME/exported/y/succeeded/A.env, kept
    for ever for `--only`/`--from` (flowsh_keep_one tests the output's *name* only), and
    `y.sh --only B` then hands the value on. `flowsh run` keeps it nowhere (the store has
    `***`) and refuses `--only B` (SELECT-4). SECRET-2: a secret's value is not kept
    once its run succeeded.
    Observed: the value is in succeeded/A.env; the script's `--only B` exits 0.
    Expected: the value in no file under FLOWSH_HOME; `--only B` refused, exit 2, as
    `flowsh run`."""
    value = "Sup3rS3cretV4lue"
    flow = tmp_path / "y.yaml"
    flow.write_text('name: y\nparams: {dbp: ""}\nsecrets: [dbp]\nsteps:\n'
                    '  - name: A\n    run: echo "copy=$dbp" >> "$FLOWSH_OUTPUT"\n'
                    '  - name: B\n    needs: [A]\n    run: echo "${#copy}" > len\n')
    _ok(run_cli("run", "-q", str(flow), f"dbp={value}", cwd=tmp_path))
    assert run_cli("run", "-q", str(flow), "--only", "B", "dbp=x",
                   cwd=tmp_path).returncode == 2
    out = tmp_path / "y.sh"
    _ok(run_cli("export", "--bash", str(flow), "-o", str(out)))
    _ok(_script(out, "-q", f"dbp={value}", home=home))
    holders = [str(p.relative_to(home)) for p in home.rglob("*")
               if p.is_file() and value.encode() in p.read_bytes()]
    assert holders == []
    assert _script(out, "-q", "--only", "B", "dbp=x", home=home).returncode == 2


def test_list_with_a_blank_description_does_not_crash(tmp_path: Path) -> None:
    """LOW. `description: "  "` (or a description of blank lines) on a step:
    `flowsh list FILE` takes `.strip().splitlines()[0]` of a truthy text that strips to
    nothing. Observed: exit 1, IndexError traceback. Expected: exit 0, the step listed
    with an empty description (as for none)."""
    flow = tmp_path / "l.yaml"
    flow.write_text('name: l\nsteps:\n  - name: a\n    description: "  "\n    run: "true"\n')
    r = run_cli("list", str(flow))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-400:]
    assert r.stdout.splitlines()[1].split() == ["a", "-"]


def test_script_only_takes_a_comma_list_with_spaces_as_run_does(tmp_path: Path,
                                                                home: Path) -> None:
    """LOW. `--only "a, b"`: `flowsh run` strips blanks around each name
    (select.split_names) and runs a and b; the exported script splits on `,` only and
    refuses `no step ' b' ... (did you mean 'b'?)`, exit 2. The brief says the script
    takes "the same options"; a cron line moved from one runtime to the other breaks.
    Observed: script exit 2. Expected: exit 0, a and b run (as `flowsh run`)."""
    flow = tmp_path / "q.yaml"
    flow.write_text("name: q\nsteps:\n  - {name: a, run: echo a >> trace}\n"
                    "  - {name: b, run: echo b >> trace}\n  - {name: c, run: echo c >> trace}\n")
    _ok(run_cli("run", "-q", str(flow), "--only", "a, b", cwd=tmp_path))
    assert sorted((tmp_path / "trace").read_text().split()) == ["a", "b"]
    (tmp_path / "trace").unlink()
    out = tmp_path / "q.sh"
    _ok(run_cli("export", "--bash", str(flow), "-o", str(out)))
    _ok(_script(out, "-q", "--only", "a, b", home=home))
    assert sorted((tmp_path / "trace").read_text().split()) == ["a", "b"]


# --- pools on one host ------------------------------------------------------------------------

def test_sigkilled_runner_does_not_free_the_slot_its_running_step_uses(
        tmp_path: Path, home: Path) -> None:
    """HIGH. Pool db of size 1. `flowsh run a.yaml` holds the slot for its step h; the
    runner is killed with SIGKILL (OOM killer, an operator's kill -9). Its step's process
    group lives on (it is only stopped by a later `flowsh resume`), still using the
    resource, but the slot's flock went with the runner (pools.py: O_CLOEXEC, "a crash
    frees its slot"), so `flowsh run b.yaml`'s step starts at once: two steps inside a
    pool of one, for as long as the orphan runs. The exported script does not do this
    (its job shell holding the slot outlives the killed main shell: b waits).
    Observed: trace a-start, b-start, then both ends. Expected: b's step starts only after
    a's step has ended (or a's step is stopped with its runner)."""
    for h in ("a", "b"):
        (tmp_path / f"{h}.yaml").write_text(
            f"name: {h}\npools: {{db: 1}}\nsteps:\n  - name: h\n    pool: db\n"
            f"    run: '{HOLD.format(host=h)}'\n")
    env = {**os.environ, "OUT": str(tmp_path)}
    a = subprocess.Popen([sys.executable, "-m", "flowsh", "run", "-q", str(tmp_path / "a.yaml")],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    b: subprocess.Popen[str] | None = None
    try:
        _poll(lambda: (tmp_path / "a.started").exists(), "a's step to hold the slot")
        a.kill()
        a.wait()
        b_out = tmp_path / "b.out"
        with b_out.open("w") as fh:
            b = subprocess.Popen([sys.executable, "-m", "flowsh", "run",
                                  str(tmp_path / "b.yaml")], env=env, text=True,
                                 stdout=fh, stderr=subprocess.STDOUT)
        # b says it waits (POOL-6) or its step starts: whichever comes first.
        _poll(lambda: (tmp_path / "b.started").exists() or b.poll() is not None
              or "waiting for pool" in b_out.read_text(), "b to wait or start")
        started_alongside = (tmp_path / "b.started").exists()
    finally:
        (tmp_path / "go").touch()
        if b is not None:
            b.wait(timeout=60)
    assert not started_alongside, (tmp_path / "trace").read_text()


# --- pools across hosts (PostgreSQL) ---------------------------------------------------------

SERVER = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def pg_schema() -> Iterator[str]:
    psycopg = pytest.importorskip("psycopg")
    try:
        psycopg.connect(SERVER, connect_timeout=3).close()
    except psycopg.Error:
        pytest.skip(f"no PostgreSQL at {SERVER}")
    schema = f"flowsh_rt15_{uuid.uuid4().hex[:12]}"
    yield schema
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


HOLD = ('echo "{host}-start" >> "$OUT/trace"; touch "$OUT/{host}.started"; '
        'while [ ! -e "$OUT/go" ]; do sleep 0.05; done; echo "{host}-end" >> "$OUT/trace"')


def _pg_hosts(tmp_path: Path, pg_schema: str) -> tuple[Path, Callable[[str], None],
                                                      dict[str, subprocess.Popen[str]]]:
    """Two hosts (own FLOWSH_HOMEs) sharing pool db of size 1 through PostgreSQL; `start`
    runs one's workflow (its step holds the pool until $OUT/go), output in OUT/HOST.out."""
    url = f"{SERVER}?options=-csearch_path%3D{pg_schema}"
    out = tmp_path / "out"
    out.mkdir()
    procs: dict[str, subprocess.Popen[str]] = {}
    for host in ("east", "west"):
        (tmp_path / host).mkdir()
        flow = tmp_path / f"{host}.yaml"
        flow.write_text(f"name: {host}\npools: {{db: 1}}\nsteps:\n  - name: h\n    pool: db\n"
                        f"    run: '{HOLD.format(host=host)}'\n")
    env = {**os.environ, "OUT": str(out), "FLOWSH_STATE": url}

    def start(host: str) -> None:
        home = tmp_path / host
        with (out / f"{host}.out").open("w") as fh:
            procs[host] = subprocess.Popen(
                [sys.executable, "-m", "flowsh", "run", str(tmp_path / f"{host}.yaml")],
                env={**env, "FLOWSH_HOME": str(home), "XDG_CONFIG_HOME": str(home / "cfg")},
                stdout=fh, stderr=subprocess.STDOUT, text=True)

    return out, start, procs


def _slot_key(pg_schema: str) -> tuple[int, int]:
    from flowsh.builtin.pg_locks import advisory_key

    key = advisory_key("pool", pg_schema, "db/0")
    return (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF


def test_pg_pool_slot_lost_with_its_connection_stops_the_holder(tmp_path: Path,
                                                                pg_schema: str) -> None:
    """HIGH. POOL-8 with PostgreSQL state, pool db of size 1, two hosts (own
    FLOWSH_HOMEs). East's step holds the slot (file lock + advisory lock on the
    `flowsh pools` connection). That connection is then lost (pg_terminate_backend here;
    a server restart, failover or a proxy's idle cut in life): the server drops the
    advisory lock, but PgPoolLocks' connection is not watched as the overlap locks are
    (pg_locks.WATCH_EVERY), so east's step runs on as if it held the slot. West then
    takes the same slot and its step starts while east's still runs: two holders of a
    pool of one. East only learns at release time, and records a run whose step finished
    as "interrupted".
    Observed: trace east-start, west-start, ... (both inside the pool at once).
    Expected: east's step stopped (as for a lost overlap lock) before west can start, or
    west still waiting until east's step ends.
    (fix15: the poll below waited only for the first two outcomes, so "west still
    waiting" — what the fix does, taking the slot again at once on a new connection as
    the overlap lock is — timed out; it now ends on west's waiting line too, and east's
    run must succeed, its step recorded as it ended.)"""
    import psycopg

    out, start, procs = _pg_hosts(tmp_path, pg_schema)
    try:
        start("east")
        _poll(lambda: (out / "east.started").exists(), "east's step to hold the slot")
        with psycopg.connect(SERVER, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid, 10000) FROM pg_locks WHERE "
                "locktype = 'advisory' AND classid = %s AND objid = %s AND objsubid = 1 "
                "AND granted", _slot_key(pg_schema)).fetchall()
        assert rows == [(True,)], rows
        start("west")
        _poll(lambda: (out / "west.started").exists() or procs["east"].poll() is not None
              or procs["west"].poll() is not None
              or "waiting for pool db" in (out / "west.out").read_text(),
              "west to start or wait, or east to stop", 30)
        (out / "go").touch()
        codes = {h: p.wait(timeout=60) for h, p in procs.items()}
        trace = (out / "trace").read_text().split()
        # The bound: east's step was stopped (no end) or ended before west's began.
        assert "east-end" not in trace or "west-start" not in trace or \
            trace.index("east-end") < trace.index("west-start"), trace
        if "east-end" in trace:  # east kept its slot: its run is recorded as it went
            assert codes["east"] == 0, (out / "east.out").read_text()
    finally:
        (out / "go").touch()
        for p in procs.values():
            if p.poll() is None:
                p.wait(timeout=60)


def test_pg_pool_slot_taken_by_another_host_meanwhile_stops_the_run(
        tmp_path: Path, pg_schema: str) -> None:
    """fix15, the other side of the finding above: another session queues for slot 0's
    advisory lock, then east's pool connection is terminated: the queued session is
    granted the lock as the server drops it, before east can take it back. East's run
    MUST stop its step at once and fail, saying it lost a lock (as for a lost overlap
    lock), rather than run on or record a wrong end."""
    import threading

    import psycopg

    out, start, procs = _pg_hosts(tmp_path, pg_schema)
    classid, objid = _slot_key(pg_schema)
    key = (classid << 32) | objid
    key = key - (1 << 64) if key >= 1 << 63 else key
    where = ("FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objid = %s "
             "AND objsubid = 1")
    try:
        start("east")
        _poll(lambda: (out / "east.started").exists(), "east's step to hold the slot")
        with psycopg.connect(SERVER, autocommit=True) as thief, \
                psycopg.connect(SERVER, autocommit=True) as admin:
            holder = admin.execute(f"SELECT pid {where} AND granted",
                                   (classid, objid)).fetchall()
            assert len(holder) == 1, holder
            queued = threading.Thread(
                target=lambda: thief.execute("SELECT pg_advisory_lock(%s)", (key,)))
            queued.start()
            _poll(lambda: admin.execute(f"SELECT count(*) {where} AND NOT granted",
                                        (classid, objid)).fetchone() == (1,),
                  "the thief to queue for the slot")
            admin.execute("SELECT pg_terminate_backend(%s)", (holder[0][0],))
            queued.join(timeout=30)
            assert not queued.is_alive()
            code = procs["east"].wait(timeout=60)
        text = (out / "east.out").read_text()
        assert code == 3 or code == 1, (code, text)
        assert "lost a lock" in text and "pool slots" in text, text
        assert "east-end" not in (out / "trace").read_text().split()
    finally:
        (out / "go").touch()
        for p in procs.values():
            if p.poll() is None:
                p.wait(timeout=60)
