"""Red-team reproducers for `foreach:` (issue 15, docs/semantics.md FOREACH), each failing
on `integ` at b3b0324 for the reason its name gives. Real `flowsh` processes, real files;
waits poll a condition (the runner's own exit, a file, /proc).

Findings: /work/wt/rtfe-findings.md (numbered; the test names are given there).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import redteam_kit as kit
from tests.conftest import poll as _poll

FLOWSH = [sys.executable, "-m", "flowsh"]

# Findings still open: strict xfails, so that a fix shows as an unexpected pass.
OPEN: frozenset[str] = frozenset()

_open_findings = kit.open_findings("rtfe", OPEN)


def _flowsh(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return kit.flowsh(*args, cwd=cwd, timeout=120)


def _status(cwd: Path) -> dict:  # type: ignore[type-arg]
    res = _flowsh("status", "--json", cwd=cwd)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)  # type: ignore[no-any-return]


def _running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _read_pid(path: Path) -> int:
    _poll(lambda: path.exists() and path.read_text().strip().isdigit(), f"{path.name}")
    return int(path.read_text())


# -- 1: the `{command:}` expansion ran inside the run loop, blocking it --------------------

def test_sigterm_during_expansion_stops_it_and_starts_no_item(tmp_path: Path,
                                                              home: Path) -> None:
    """The runner sat in the expansion command: SIGTERM was acted on only once it ended,
    and then the items still started (a run recorded `interrupted` with its step run)."""
    (tmp_path / "flow.yaml").write_text(
        "steps:\n"
        "  - name: s\n"
        "    foreach: {command: 'echo $$ > exp.pid; sleep 600; echo a'}\n"
        "    run: 'echo $ITEM >> trace'\n")
    runner = subprocess.Popen([*FLOWSH, "run", "flow.yaml", "--quiet"], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        exp = _read_pid(tmp_path / "exp.pid")
        runner.send_signal(signal.SIGTERM)
        try:
            runner.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError("the runner did not act on SIGTERM during the expansion") \
                from None
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    assert runner.returncode == 130
    _poll(lambda: not _running(exp), "the expansion command to be stopped", 10)
    assert not (tmp_path / "trace").exists()
    rec = _status(tmp_path)
    assert rec["status"] == "interrupted"
    assert rec["steps"]["s"]["status"] == "interrupted"
    assert rec["steps"]["s"]["items"] is None


def test_another_steps_timeout_holds_during_an_expansion(tmp_path: Path,
                                                         home: Path) -> None:
    """While the runner sat in an expansion, no other step's timeout was enforced: here
    the expansion waits for `other` to be killed by its timeout, which never came."""
    (tmp_path / "flow.yaml").write_text(
        "steps:\n"
        "  - {name: other, needs: [], timeout: 1, run: 'echo $$ > other.pid; exec sleep 600'}\n"
        "  - name: s\n"
        "    needs: []\n"
        "    continue_on_failure: true\n"
        "    foreach:\n"
        "      command: >-\n"
        "        while [ ! -s other.pid ]; do sleep 0.05; done;\n"
        "        while kill -0 \"$(cat other.pid)\" 2>/dev/null; do sleep 0.05; done; echo a\n"
        "    run: 'echo $ITEM >> trace'\n")
    try:
        res = subprocess.run([*FLOWSH, "run", "flow.yaml"], cwd=tmp_path, text=True,
                             capture_output=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        other = tmp_path / "other.pid"
        if other.exists():
            os.kill(int(other.read_text()), signal.SIGKILL)
        raise AssertionError("`other` was never timed out while the items were expanded") \
            from None
    assert res.returncode == 1, res.stderr
    rec = _status(tmp_path)
    assert rec["steps"]["other"]["status"] == "failed"
    assert "timed out" in (rec["steps"]["other"]["message"] or "")
    assert rec["steps"]["s"]["items"] == ["a"]
    # The step's time includes its expansion, which ended only after `other` did.
    assert rec["steps"]["s"]["started_at"] < rec["steps"]["other"]["ended_at"]


def test_expansion_timeout_leaves_no_process_behind(tmp_path: Path, home: Path) -> None:
    """On its timeout only the shell was killed; what it started ran on, orphaned."""
    (tmp_path / "flow.yaml").write_text(
        "steps:\n"
        "  - name: s\n"
        "    timeout: 1\n"
        "    foreach: {command: 'sleep 600 & echo $! > bg.pid; wait; echo a'}\n"
        "    run: 'echo $ITEM >> trace'\n")
    res = _flowsh("run", "flow.yaml", cwd=tmp_path)
    assert res.returncode == 1
    assert "foreach: its command timed out" in res.stderr
    bg = _read_pid(tmp_path / "bg.pid")
    try:
        _poll(lambda: not _running(bg), "the expansion's background child to be stopped", 10)
    finally:
        if _running(bg):
            os.kill(bg, signal.SIGKILL)


def test_kill_9_during_expansion_then_resume_expands_once_more(tmp_path: Path,
                                                               home: Path) -> None:
    """The runner killed while its expansion command runs: the resume stops that command
    and expands again (nothing was recorded), and every item runs once."""
    (tmp_path / "flow.yaml").write_text(
        "steps:\n"
        "  - name: s\n"
        "    foreach:\n"
        "      command: >-\n"
        "        echo $$ >> exp.pids; [ -e go ] || sleep 600; printf 'a\\nb\\n'\n"
        "    run: 'echo $ITEM >> trace'\n")
    runner = subprocess.Popen([*FLOWSH, "run", "flow.yaml", "--quiet"], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        first = _read_pid(tmp_path / "exp.pids")
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait(timeout=30)
    finally:
        if runner.poll() is None:
            runner.kill()
    (tmp_path / "go").touch()
    (run_id,) = [p.name for p in (home / "runs").iterdir()]
    res = _flowsh("resume", run_id, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert not _running(first)
    assert sorted((tmp_path / "trace").read_text().split()) == ["a", "b"]


# -- 2: the expansion command ignored the step's (and the workflow's) `shell:` ----------

def test_expansion_command_runs_with_the_steps_shell_and_its_options(
        tmp_path: Path, home: Path) -> None:
    """`shell: bash -eu` was handed to exec as one program name: 'could not start'."""
    (tmp_path / "flow.yaml").write_text(
        "steps:\n"
        "  - name: s\n"
        "    shell: bash -eu\n"
        "    foreach: {command: 'printf \"%s\\n\" \"$-\" | tr -d \\n; echo'}\n"
        "    run: 'echo \"$ITEM\" >> trace'\n")
    res = _flowsh("run", "flow.yaml", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    flags = (tmp_path / "trace").read_text().strip()
    assert "e" in flags and "u" in flags, flags


def test_expansion_command_runs_with_the_workflows_shell(tmp_path: Path,
                                                         home: Path) -> None:
    (tmp_path / "flow.yaml").write_text(
        "shell: bash -u\n"
        "steps:\n"
        "  - name: s\n"
        "    foreach: {command: 'echo \"x$-\"'}\n"
        "    run: 'echo \"$ITEM\" >> trace'\n")
    res = _flowsh("run", "flow.yaml", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "u" in (tmp_path / "trace").read_text()


# -- 3: an item too long for an environment variable failed at each instance's start --------

def test_an_item_longer_than_an_env_var_can_hold_fails_the_step_at_expansion(
        tmp_path: Path, home: Path) -> None:
    """Linux takes at most 128 KiB per environment string: such an item was recorded and
    its instance failed to start ('Argument list too long', exit 127) while the others
    ran. It is refused with the other bad expansions (FOREACH-2): no instance runs."""
    (tmp_path / "items.txt").write_text("a\n" + "x" * 200_000 + "\nb\n")
    (tmp_path / "flow.yaml").write_text(
        "steps:\n  - {name: s, foreach: {file: items.txt}, run: 'echo $ITEM_INDEX >> trace'}\n")
    res = _flowsh("run", "flow.yaml", cwd=tmp_path)
    assert res.returncode == 1
    assert "foreach: item 1 is 200000 bytes long" in res.stderr, res.stderr
    assert not (tmp_path / "trace").exists()
    assert _status(tmp_path)["steps"]["s"]["items"] is None


# -- not defects: bounds proven from the timestamps items write ---------------------------

def test_max_parallel_pool_and_concurrency_bound_items_with_retries(tmp_path: Path,
                                                                    home: Path) -> None:
    def item(step: str, extra: str = "") -> str:
        return (f'echo "+ {step} $ITEM $(date +%s.%N)" >> trace; sleep 0.2; '
                f'echo "- {step} $ITEM $(date +%s.%N)" >> trace{extra}')
    fail_b_once = '; [ "$FLOWSH_ATTEMPT" = 2 ] || [ "$ITEM" != b ]'
    (tmp_path / "flow.yaml").write_text(
        "concurrency: 3\npools: {db: 1}\nsteps:\n"
        f"  - {{name: x, needs: [], foreach: [a, b, c, d, e], max_parallel: 2, retries: 1,"
        f" retry_delay: 0, run: {json.dumps(item('x', fail_b_once))}}}\n"
        f"  - {{name: y, needs: [], foreach: [a, b, c, d], max_parallel: 2,"
        f" run: {json.dumps(item('y'))}}}\n"
        f"  - {{name: z, needs: [], foreach: [a, b, c], pool: db,"
        f" run: {json.dumps(item('z'))}}}\n")
    res = _flowsh("run", "flow.yaml", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    events = sorted((float(t), k == "+", s) for k, s, _, t in
                    (line.split() for line in (tmp_path / "trace").read_text().splitlines()))
    now: dict[str, int] = {}
    most: dict[str, int] = {}
    total = top = 0
    for _, start, step in events:
        now[step] = now.get(step, 0) + (1 if start else -1)
        total += 1 if start else -1
        most[step], top = max(most.get(step, 0), now[step]), max(top, total)
    assert len(events) == 2 * (6 + 4 + 3)  # b of x twice
    assert most["x"] <= 2 and most["y"] <= 2 and most["z"] == 1 and top <= 3, (most, top)


# -- Celery: a real worker; kill -9 of the runner mid fan-out, then resume ----------------

@pytest.fixture
def celery_worker(tmp_path: Path, home: Path) -> Iterator[dict[str, str]]:
    import uuid

    tag = uuid.uuid4().hex[:8]
    broker = os.environ.get("FLOWSH_CONFORMANCE_REDIS", "redis://127.0.0.1:6379/6")
    env = {**os.environ, "FLOWSH_CELERY_BROKER": broker,
           "FLOWSH_CELERY_QUEUE": f"rtfe-{tag}", "FLOWSH_LOAD_ENTRYPOINTS": "1"}
    env.pop("FLOWSH_CELERY_BACKEND", None)
    log = tmp_path / "worker.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "flowsh_celery.worker", "worker",
             "-Q", env["FLOWSH_CELERY_QUEUE"], "-n", f"rtfe-{tag}@%h", "-c", "4",
             "--pool", "prefork", "-l", "INFO", "--without-gossip", "--without-mingle",
             "--without-heartbeat"],
            env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _poll(lambda: b"ready." in log.read_bytes() or proc.poll() is not None,
              "the celery worker to be ready")
        assert proc.poll() is None, log.read_text()
        yield {k: env[k] for k in ("FLOWSH_CELERY_BROKER", "FLOWSH_CELERY_QUEUE",
                                   "FLOWSH_LOAD_ENTRYPOINTS")}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_celery_kill_9_mid_fan_out_then_resume_runs_each_item_once(
        tmp_path: Path, home: Path, celery_worker: dict[str, str]) -> None:
    item = ('echo "start $ITEM" >> trace; '
            'if [ "$ITEM" = c ] && [ ! -e go ]; then echo $$ > c.pid; sleep 600; fi; '
            'echo "end $ITEM" >> trace; echo "V=$ITEM" >> "$FLOWSH_OUTPUT"')
    (tmp_path / "flow.yaml").write_text(
        "executor: celery\nkill_grace: 0.5s\nsteps:\n"
        f"  - {{name: s, foreach: [a, b, c, d, e], max_parallel: 2, run: {json.dumps(item)}}}\n"
        "  - {name: after, run: 'printf %s \"$V\" > after.out'}\n")
    env = {**os.environ, **celery_worker}
    runner = subprocess.Popen([*FLOWSH, "run", "flow.yaml", "--quiet"], cwd=tmp_path,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trace = tmp_path / "trace"

    def done() -> bool:
        lines = set(trace.read_text().splitlines()) if trace.exists() else set()
        if not {"end a", "end b", "end d", "end e", "start c"} <= lines:
            return False
        steps = _status(tmp_path)["steps"]
        return all(steps.get(f"s[{i}]", {}).get("status") == "succeeded" for i in "abde")

    try:
        _poll(done, "a, b, d, e to end and be recorded while c hangs", 120)
        first_c = _read_pid(tmp_path / "c.pid")
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait(timeout=30)
    finally:
        if runner.poll() is None:
            runner.kill()
    (tmp_path / "go").touch()
    (run_id,) = [p.name for p in (home / "runs").iterdir()]
    res = subprocess.run([*FLOWSH, "resume", run_id], cwd=tmp_path, env=env, text=True,
                         capture_output=True, timeout=180, check=False)
    assert res.returncode == 0, res.stderr
    assert not _running(first_c)
    lines = trace.read_text().splitlines()
    assert sorted(lines) == sorted(["start a", "end a", "start b", "end b", "start c",
                                    "start c", "end c", "start d", "end d", "start e",
                                    "end e"]), lines
    assert (tmp_path / "after.out").read_text() == "a\nb\nc\nd\ne"
