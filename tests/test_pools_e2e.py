"""Pools shared across processes (docs/semantics.md POOL): real `flowsh run`s, an exported
script and `flowsh wrap --pool` on one pool, the bound proven from the timestamps the steps
write; a holder killed with SIGKILL frees its slot; the waiting hook and the refusals."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flowsh import hookimpl, plugins
from flowsh.state import RunRecord
from tests.conftest import poll as _poll

FLOWSH = [sys.executable, "-m", "flowsh"]
# Each step records when it held the pool: its start, a pause, its end (all in the slot).
HELD = ('date +%s.%N > "$OUT/$FLOWSH_WORKFLOW.$FLOWSH_STEP.start"; sleep 0.6; '
        'date +%s.%N > "$OUT/$FLOWSH_WORKFLOW.$FLOWSH_STEP.end"')


def _flow(path: Path, name: str, steps: int, size: int = 2) -> Path:
    lines = [f"name: {name}", f"pools: {{db: {size}}}", "concurrency: 4", "steps:"]
    for i in range(steps):
        lines.append(f"  - {{name: s{i}, pool: db, needs: [], run: {json.dumps(HELD)}}}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _most_at_once(out: Path) -> tuple[int, int]:
    """(how many intervals, the most that overlapped at one moment)."""
    events: list[tuple[float, int]] = []
    starts = sorted(out.glob("*.start"))
    for start in starts:
        end = start.with_suffix(".end")
        events += [(float(start.read_text()), 1), (float(end.read_text()), -1)]
    now = most = 0
    for _, delta in sorted(events):  # a tie (same ns) sorts the end first
        now += delta
        most = max(most, now)
    return len(starts), most


@pytest.fixture
def shared(tmp_path: Path, home: Path) -> Iterator[dict[str, str]]:
    """The environment every process of a test shares: one FLOWSH_HOME, one config."""
    out = tmp_path / "out"
    out.mkdir()
    config = tmp_path / "config.yaml"
    config.write_text("pools: {db: 2}\n")
    env = {**os.environ, "OUT": str(out), "FLOWSH_CONFIG": str(config)}
    yield env


def test_three_workflows_and_a_wrapped_command_share_a_pool_of_two(
        tmp_path: Path, shared: dict[str, str]) -> None:
    """Two `flowsh run`s, an exported script and `flowsh wrap --pool`, at once: 7 steps in
    a pool of 2 never run more than 2 at a time, and do use both slots."""
    one = _flow(tmp_path / "one.yaml", "one", 2)
    two = _flow(tmp_path / "two.yaml", "two", 2)
    three = _flow(tmp_path / "three.yaml", "three", 2)
    script = tmp_path / "three.sh"
    subprocess.run([*FLOWSH, "export", "--bash", str(three), "-o", str(script)], env=shared,
                   check=True, capture_output=True)
    procs = [
        subprocess.Popen([*FLOWSH, "run", str(one)], env=shared, stderr=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True),
        subprocess.Popen([*FLOWSH, "run", str(two)], env=shared, stderr=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True),
        subprocess.Popen(["bash", str(script)], env=shared, stderr=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True),
        subprocess.Popen([*FLOWSH, "wrap", "--pool", "db", "-v", "--", "bash", "-c", HELD],
                         env=shared, stderr=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True),
    ]
    said = ""
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)  # returns when the process ends
        assert proc.returncode == 0, stderr + stdout
        said += stdout + stderr
    count, most = _most_at_once(Path(shared["OUT"]))
    assert count == 7
    assert most == 2, f"{most} steps held the pool of 2 at once"
    assert "waiting for pool db" in said
    # One pool, the same files for every runtime: $FLOWSH_HOME/pools/db/0 and /1.
    assert sorted(p.name for p in (Path(os.environ["FLOWSH_HOME"]) / "pools" / "db").iterdir()
                  ) == ["0", "1"]


@pytest.mark.parametrize("holder", ["run", "script"])
def test_a_holder_killed_with_sigkill_frees_its_slot(
        tmp_path: Path, shared: dict[str, str], holder: str) -> None:
    hold = tmp_path / "hold.yaml"
    hold.write_text("pools: {db: 1}\nsteps:\n  - {name: h, pool: db, run: "
                    + json.dumps('ps -o pgid= -p $$ | tr -d " " > "$OUT/pgid.tmp"; '
                               'mv "$OUT/pgid.tmp" "$OUT/pgid"; sleep 300') + "}\n")
    wait = tmp_path / "wait.yaml"
    wait.write_text("pools: {db: 1}\nsteps:\n  - {name: w, pool: db, timeout: 5s, run: "
                    + json.dumps('touch "$OUT/ran"') + "}\n")
    out = Path(shared["OUT"])
    if holder == "run":
        argv = [*FLOWSH, "run", str(hold)]
    else:
        subprocess.run([*FLOWSH, "export", "--bash", str(hold), "-o", str(tmp_path / "h.sh")],
                       env=shared, check=True, capture_output=True)
        argv = ["bash", str(tmp_path / "h.sh")]
    first = subprocess.Popen(argv, env=shared, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    step_group = 0
    try:
        _poll((out / "pgid").is_file, "the holder's step to start")
        step_group = int((out / "pgid").read_text())
        err = tmp_path / "second.err"
        with open(err, "w") as fh:
            second = subprocess.Popen([*FLOWSH, "run", str(wait)], env=shared,
                                      stdout=subprocess.DEVNULL, stderr=fh)
        _poll(lambda: "w: waiting for pool db" in err.read_text(), "the second run to wait")
        assert not (out / "ran").exists()
        os.killpg(first.pid, signal.SIGKILL)  # the runner (or script) and its job shells
        first.wait(timeout=30)
        assert second.wait(timeout=60) == 0, err.read_text()
        assert (out / "ran").exists()
    finally:
        for group in (first.pid, step_group):
            if group:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)  # the step outlives its runner


@pytest.mark.parametrize("holder", ["run", "script"])
def test_a_daemon_a_keep_children_step_leaves_keeps_no_slot(
        tmp_path: Path, shared: dict[str, str], holder: str) -> None:
    """The slot's keeper (pools.Slot.keep_for) watches a keep_children step's main process,
    and is ended with the attempt: the daemon left in the step's group holds nothing."""
    daemon = tmp_path / "daemon.yaml"
    daemon.write_text("pools: {db: 1}\nsteps:\n  - {name: d, pool: db, keep_children: true, "
                      "run: " + json.dumps('sleep 300 >/dev/null 2>&1 & echo $! > "$OUT/pid"')
                      + "}\n")
    after = tmp_path / "after.yaml"
    after.write_text("pools: {db: 1}\nsteps:\n  - {name: a, pool: db, timeout: 20s, run: "
                     + json.dumps('touch "$OUT/ran"') + "}\n")
    out = Path(shared["OUT"])
    if holder == "run":
        argv = [*FLOWSH, "run", "-q", str(daemon)]
    else:
        subprocess.run([*FLOWSH, "export", "--bash", str(daemon), "-o", str(tmp_path / "d.sh")],
                       env=shared, check=True, capture_output=True)
        argv = ["bash", str(tmp_path / "d.sh"), "-q"]
    try:
        first = subprocess.run(argv, env=shared, capture_output=True, text=True, timeout=60)
        assert first.returncode == 0, first.stderr
        second = subprocess.run([*FLOWSH, "run", str(after)], env=shared, capture_output=True,
                                text=True, timeout=60)
        assert second.returncode == 0 and "waiting for pool" not in second.stdout + \
            second.stderr, second.stdout + second.stderr
        assert (out / "ran").exists()
    finally:
        if (out / "pid").exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int((out / "pid").read_text()), signal.SIGKILL)


def test_the_slots_keeper_is_there_before_the_step_starts(
        tmp_path: Path, shared: dict[str, str]) -> None:
    """POOL-1: the keeper that holds the slot for a runner killed alone is started before
    the step, not after it: on a loaded host a runner killed between the two (the step
    already running) freed the slot under it (rt15's SIGKILL test failed at load 30). The
    step itself looks for its runner's keeper."""
    flow = tmp_path / "k.yaml"
    flow.write_text("pools: {db: 1}\nsteps:\n  - {name: k, pool: db, run: "
                    + json.dumps("pgrep -P \"$PPID\" -f 'flowsh-pool-keepe[r]' > \"$OUT/seen\"")
                    + "}\n")
    res = subprocess.run([*FLOWSH, "run", str(flow)], env=shared, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert (Path(shared["OUT"]) / "seen").read_text().strip().isdigit()


def test_waiting_fires_the_hook_and_the_wait_is_outside_the_timeout(write_flow) -> None:
    from flowsh.engine import RunOptions, run_workflow
    from flowsh.loader import load_workflow

    seen: list[tuple[str, ...]] = []

    class Spy:
        @hookimpl
        def flowsh_step_waiting(self, run: RunRecord, step: Any, workflow: Any,
                                pool: str) -> None:
            seen.append(("waiting", step.name, pool, step.status, str(step.attempts)))

        @hookimpl
        def flowsh_step_started(self, run: RunRecord, step: Any, workflow: Any) -> None:
            seen.append(("started", step.name, str(step.attempts)))

    plugins.get_plugin_manager().register(Spy(), name="spy")
    flow = write_flow("""
        pools: {db: 1}
        steps:
          - {name: a, pool: db, run: 'sleep 0.8'}
          - {name: b, pool: db, needs: [], timeout: 0.5s, run: 'true'}
    """)
    run = run_workflow(load_workflow(flow), RunOptions())
    assert run.exit_code == 0, {n: s.message for n, s in run.steps.items()}
    assert seen == [("started", "a", "1"), ("waiting", "b", "db", "pending", "0"),
                    ("started", "b", "1")]


def test_an_undeclared_pool_is_refused_by_validate_run_and_wrap(
        tmp_path: Path, shared: dict[str, str]) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text("steps:\n  - name: a\n    pool: nope\n    run: touch ran\n")
    for cmd in ("validate", "run"):
        res = subprocess.run([*FLOWSH, cmd, str(flow)], env=shared, capture_output=True,
                             text=True, cwd=tmp_path)
        assert res.returncode == 2
        assert "flow.yaml:3:11: step 'a': `pool: nope` is not declared" in res.stderr
        assert "declared: db" in res.stderr  # the user config's
        assert "Traceback" not in res.stderr
    res = subprocess.run([*FLOWSH, "wrap", "--pool", "nope", "--", "true"], env=shared,
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert "--pool nope: not declared in `pools` of the user config" in res.stderr
    assert not (tmp_path / "ran").exists()


def _sigint(disposition: signal.Handlers) -> Callable[[], None]:
    """For preexec_fn: the runner starts with this SIGINT whatever the suite was started
    with (a suite run in the background ignores it, and so did every runner it started)."""
    return lambda: signal.signal(signal.SIGINT, disposition)


@pytest.mark.parametrize("runtime", ["run", "script"])
@pytest.mark.parametrize("sigint", ["default", "ignored"])
def test_an_interrupt_while_waiting_ends_the_step_interrupted_with_no_attempt(
        tmp_path: Path, shared: dict[str, str], runtime: str, sigint: str) -> None:
    """`ignored`: started as a non-interactive shell's `&` starts a command (a CI runner, a
    test suite run in the background), with SIGINT ignored. The script ignored Ctrl-C then,
    bash refusing a trap on it, and waited for the slot for ever (issue 15)."""
    from flowsh import pools

    held = pools.try_take("db", 1)  # this test holds the pool's only slot
    assert held is not None
    flow = tmp_path / "flow.yaml"
    flow.write_text("pools: {db: 1}\nsteps:\n  - {name: w, pool: db, run: 'touch ran'}\n")
    argv = [*FLOWSH, "run", str(flow)]
    if runtime == "script":
        subprocess.run([*FLOWSH, "export", "--bash", str(flow), "-o", str(tmp_path / "f.sh")],
                       env=shared, check=True, capture_output=True)
        argv = ["bash", str(tmp_path / "f.sh")]
    log = tmp_path / "out.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(argv, env=shared, stdout=fh, stderr=subprocess.STDOUT,
                                cwd=tmp_path, start_new_session=True,
                                preexec_fn=_sigint(signal.SIG_IGN if sigint == "ignored"
                                                   else signal.SIG_DFL))
    try:
        _poll(lambda: "waiting for pool db" in log.read_text(), "the step to wait")
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the terminal's process group
        assert proc.wait(timeout=60) == 130, log.read_text()
    finally:
        held.release()
        if proc.poll() is None:  # it hung: nothing of it outlives the test
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert not (tmp_path / "ran").exists()
    rows = (Path(shared["FLOWSH_HOME"]) / "logs" / "workflow_logs.csv").read_text()
    assert rows.splitlines()[-1].split(",")[3] == "interrupted", rows
    if runtime == "run":
        res = subprocess.run([*FLOWSH, "status", "--json"], env=shared, capture_output=True,
                             text=True, check=True)
        step = json.loads(res.stdout)["steps"]["w"]
        assert (step["status"], step["attempts"]) == ("interrupted", 0)
        assert step["message"] == "interrupted while waiting for pool db"


def test_waiting_is_an_event_in_json_and_in_the_jsonl_log(
        tmp_path: Path, shared: dict[str, str]) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text("pools: {db: 1}\nsteps:\n  - {name: a, pool: db, run: 'sleep 0.5'}\n"
                    "  - {name: b, pool: db, needs: [], run: 'true'}\n")
    res = subprocess.run([*FLOWSH, "run", "--json", str(flow)], env=shared,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    events = [json.loads(line) for line in res.stdout.splitlines()]
    waiting = [e for e in events if e["event"] == "step_waiting"]
    assert [(e["step"], e["pool"], e["attempt"]) for e in waiting] == [("b", "db", 1)]
    kinds = [e["event"] for e in events if e.get("step") == "b"]
    assert kinds == ["step_waiting", "step_started", "step_finished"]
    log = Path(shared["FLOWSH_HOME"]) / "logs" / "events.jsonl"
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["step"], e["pool"], e["status"], e["message"]) for e in logged
            if e["event"] == "step_waiting"] == [("b", "db", "pending", "waiting for pool db")]
