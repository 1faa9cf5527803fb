"""`call:` end to end (docs/semantics.md CALL): real `flowsh` processes, the child run by
`flowsh call-child` inside the parent's step, a crash of the child's runner (kill -9) and
a resume of the parent that finishes the child without running its succeeded steps again
(proved by the files the steps append to)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowsh.state import SUCCEEDED
from flowsh.store import open_backend

PARENT = """\
name: parent
steps:
  - {name: pre, run: "echo pre >> pre.count"}
  - {name: sub, call: child.yaml}
  - {name: post, run: "printf %s \\"$OUT\\" > got"}
"""
CHILD = """\
name: child
steps:
  - {name: c1, run: "echo c1 >> c1.count"}
  - {name: c2, run: "echo c2 >> c2.count; test -f ok || { echo $$ > c2.pid; sleep 60; }; echo OUT=done >> \\"$FLOWSH_OUTPUT\\""}
  - {name: c3, run: "echo c3 >> c3.count"}
"""


# c1 passes a secret on: after the crash it is kept only in the child run's private
# directory, and must still reach `post` once the resumed child succeeds.
CHILD_SECRET = CHILD.replace('echo c1 >> c1.count"', 'echo c1 >> c1.count; '
                             'echo SESSION_TOKEN=tok-9 >> \\"$FLOWSH_OUTPUT\\""')
PARENT_SECRET = PARENT.replace('printf %s \\"$OUT\\" > got',
                               'printf %s \\"$OUT/$SESSION_TOKEN\\" > got')


def _flowsh(*args: str, cwd: Path, state: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if state:
        env["FLOWSH_STATE"] = state
    return subprocess.run([sys.executable, "-m", "flowsh", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def _wait_for(path: Path, proc: subprocess.Popen[str], deadline: float = 60) -> None:
    end = time.time() + deadline
    while not (path.exists() and path.read_text().strip()):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < end, f"{path} never appeared"
        time.sleep(0.05)


def _child_runner(step_pid: int) -> int:
    """The `flowsh call-child` process: the parent of the child's step process."""
    with open(f"/proc/{step_pid}/stat") as fh:
        ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
    cmdline = Path(f"/proc/{ppid}/cmdline").read_bytes().split(b"\0")
    assert b"call-child" in cmdline, cmdline
    return ppid


def _wait_gone(pid: int, deadline: float = 30) -> None:
    """`pid` ends (a zombie counts as ended: its parent may be gone too)."""
    end = time.time() + deadline
    while Path(f"/proc/{pid}").exists():
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return
        except FileNotFoundError:
            return
        assert time.time() < end, f"process {pid} outlived the step that started it"
        time.sleep(0.05)


def _run_ids(state: str | None) -> dict[str, str]:
    """The latest run id of each workflow."""
    backend = open_backend(state)
    try:
        return {r.workflow: r.run_id for r in reversed(backend.list_runs())}
    finally:
        backend.close()


@pytest.mark.parametrize("state", [None, "json"])
def test_child_runner_killed_then_parent_resume_finishes_the_child(
        tmp_path: Path, home: Path, state: str | None) -> None:
    url = f"json://{home / 'state'}" if state == "json" else None
    (tmp_path / "flow.yaml").write_text(PARENT_SECRET)
    (tmp_path / "child.yaml").write_text(CHILD_SECRET)
    env = dict(os.environ, **({"FLOWSH_STATE": url} if url else {}))
    proc = subprocess.Popen([sys.executable, "-m", "flowsh", "run", "flow.yaml"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        _wait_for(tmp_path / "c2.pid", proc)
        step_pid = int((tmp_path / "c2.pid").read_text())
        os.kill(_child_runner(step_pid), signal.SIGKILL)  # the child's runner crashes mid-step
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out
    _wait_gone(step_pid)  # what the dead runner left is stopped with the call step
    ids = _run_ids(url)
    parent_id, child_id = ids["parent"], ids["child"]
    assert [(tmp_path / f).read_text() for f in ("pre.count", "c1.count", "c2.count")] == \
        ["pre\n", "c1\n", "c2\n"]
    # The link, both ways, in the store and in what status shows.
    status = _flowsh("status", parent_id, "--json", cwd=tmp_path, state=url)
    record = json.loads(status.stdout)
    assert record["steps"]["sub"]["child_run"] == child_id
    assert record["steps"]["sub"]["status"] == "failed"
    child = json.loads(_flowsh("status", child_id, "--json", cwd=tmp_path, state=url).stdout)
    assert (child["parent_run"], child["parent_step"]) == (parent_id, "sub")
    assert child["status"] == "crashed"

    (tmp_path / "ok").touch()
    res = _flowsh("resume", parent_id, cwd=tmp_path, state=url)
    assert res.returncode == 0, res.stdout + res.stderr
    # pre and c1 succeeded before: not run again; c2 ran again, c3 once.
    assert [(tmp_path / f).read_text() for f in
            ("pre.count", "c1.count", "c2.count", "c3.count")] == \
        ["pre\n", "c1\n", "c2\nc2\n", "c3\n"]
    assert (tmp_path / "got").read_text() == "done/tok-9"
    assert _run_ids(url) == ids  # the same child run, taken up again: no new one
    child = json.loads(_flowsh("status", child_id, "--json", cwd=tmp_path, state=url).stdout)
    assert child["status"] == SUCCEEDED
    text = _flowsh("status", parent_id, cwd=tmp_path, state=url).stdout
    assert f"child run {child_id}" in text
    text = _flowsh("status", child_id, cwd=tmp_path, state=url).stdout
    assert f"parent   {parent_id} (step sub)" in text
    hist = _flowsh("history", cwd=tmp_path, state=url).stdout
    assert f"<- {parent_id} (sub)" in hist and f"-> {child_id} (sub)" in hist
    for run_id, shown in ((parent_id, f"child run <code>{child_id}</code>"),
                          (child_id, f"Called by run <code>{parent_id}</code>")):
        report = tmp_path / f"{run_id}.html"
        res = _flowsh("report", run_id, "-o", str(report), cwd=tmp_path, state=url)
        assert res.returncode == 0, res.stderr
        assert shown in report.read_text()


def test_failing_child_step_then_resume_then_retry_starts_a_new_child(
        tmp_path: Path, home: Path) -> None:
    (tmp_path / "flow.yaml").write_text(PARENT.replace("post, run:", "post, retries: 0, run:")
                                        + '  - {name: last, run: "test -f go"}\n')
    (tmp_path / "child.yaml").write_text(CHILD.replace("{ echo $$ > c2.pid; sleep 60; }",
                                                       "exit 7"))
    first = _flowsh("run", "flow.yaml", cwd=tmp_path)
    assert first.returncode == 1
    assert not (tmp_path / "c3.count").exists()
    (tmp_path / "ok").touch()
    second = _flowsh("run", "flow.yaml", "--resume", cwd=tmp_path)
    assert second.returncode == 1  # `last` fails now
    assert (tmp_path / "c1.count").read_text() == "c1\n"
    assert (tmp_path / "c2.count").read_text() == "c2\nc2\n"
    ids = _run_ids(None)
    # `flowsh retry --step sub` of the parent starts a new child run, which runs all.
    (tmp_path / "go").touch()
    third = _flowsh("retry", ids["parent"], "--step", "sub", "--downstream", cwd=tmp_path)
    assert third.returncode == 0, third.stdout + third.stderr
    assert (tmp_path / "c1.count").read_text() == "c1\nc1\n"
    assert _run_ids(None)["child"] != ids["child"]


def test_succeeded_child_on_record_hands_its_outputs_on(tmp_path: Path, home: Path) -> None:
    """A parent that crashed after its child succeeded: the call step's next attempt
    reuses the child's outputs and runs none of its steps."""
    (tmp_path / "flow.yaml").write_text(PARENT)
    (tmp_path / "child.yaml").write_text(CHILD)
    (tmp_path / "ok").touch()
    assert _flowsh("run", "flow.yaml", cwd=tmp_path).returncode == 0
    ids = _run_ids(None)
    backend = open_backend(None)
    try:  # make the parent's record look as if it died before its call step finished
        run = backend.load_run(ids["parent"])
        run.status = "failed"
        for name in ("sub", "post"):
            run.steps[name].status = "failed"
            backend.save_step(run, run.steps[name])
        backend.update_run(run)
    finally:
        backend.close()
    (tmp_path / "got").unlink()
    res = _flowsh("resume", ids["parent"], cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / "c2.count").read_text() == "c2\n"
    assert (tmp_path / "got").read_text() == "done"
    assert "succeeded before; its outputs are used" in _flowsh(
        "logs", ids["parent"], "sub", cwd=tmp_path).stdout


def test_call_child_by_hand_is_refused(tmp_path: Path) -> None:
    res = _flowsh("call-child", cwd=tmp_path)
    assert res.returncode == 2
    assert "FLOWSH_CALL_FILE is not set" in res.stderr
    assert "Traceback" not in res.stderr


def test_interrupting_the_parent_stops_the_child_and_resume_finishes_it(
        tmp_path: Path, home: Path) -> None:
    (tmp_path / "flow.yaml").write_text(PARENT)
    (tmp_path / "child.yaml").write_text(CHILD)
    proc = subprocess.Popen([sys.executable, "-m", "flowsh", "run", "flow.yaml"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(tmp_path / "c2.pid", proc)
        step_pid = int((tmp_path / "c2.pid").read_text())
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    _wait_gone(step_pid)  # the child's step is stopped with it
    ids = _run_ids(None)
    child = json.loads(_flowsh("status", ids["child"], "--json", cwd=tmp_path).stdout)
    assert child["status"] == "interrupted"
    assert child["steps"]["c2"]["status"] == "interrupted"
    (tmp_path / "ok").touch()
    res = _flowsh("resume", ids["parent"], cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / "c1.count").read_text() == "c1\n"
    assert (tmp_path / "c2.count").read_text() == "c2\nc2\n"
    assert (tmp_path / "got").read_text() == "done"


def test_parent_secret_filling_a_child_param_stays_secret(tmp_path: Path, home: Path) -> None:
    (tmp_path / "flow.yaml").write_text(
        "secrets: [pin]\nparams: {pin: null}\nsteps:\n  - {name: sub, call: child.yaml}\n")
    (tmp_path / "child.yaml").write_text(
        "name: child\nparams: {pin: null}\nsteps:\n  - {name: c1, run: 'echo \"pin is $pin\"; "
        "printf %s \"$pin\" > got'}\n")
    res = _flowsh("run", "flow.yaml", "pin=80417", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / "got").read_text() == "80417"
    child = json.loads(_flowsh("status", _run_ids(None)["child"], "--json",
                               cwd=tmp_path).stdout)
    assert child["params"] == {"pin": "***"}
    for path in home.rglob("*"):
        if path.is_file():
            assert b"80417" not in path.read_bytes(), path


def test_history_links_a_parent_to_its_call_steps_latest_child(tmp_path: Path) -> None:
    """After `flowsh retry --step` of a call step the parent has two child runs: history
    names the one its step now records (it named the oldest)."""
    (tmp_path / "child.yaml").write_text("steps:\n  - {name: c, run: 'true'}\n")
    (tmp_path / "flow.yaml").write_text("steps:\n  - {name: sub, call: child.yaml}\n")
    assert _flowsh("run", "-q", "flow.yaml", cwd=tmp_path).returncode == 0
    parent = json.loads(_flowsh("history", "--json", cwd=tmp_path).stdout)
    parent_id = next(r["run_id"] for r in parent if not r.get("parent_run"))
    res = _flowsh("retry", parent_id, "--step", "sub", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    latest = json.loads(_flowsh("status", parent_id, "--json", cwd=tmp_path).stdout)
    child_id = latest["steps"]["sub"]["child_run"]
    children = [r["run_id"] for r in json.loads(_flowsh("history", "--json", cwd=tmp_path).stdout)
                if r.get("parent_run") == parent_id]
    assert len(children) == 2 and child_id == children[0]  # newest first
    line = next(x for x in _flowsh("history", cwd=tmp_path).stdout.splitlines()
                if x.startswith(parent_id))
    assert line.endswith(f"-> {child_id} (sub)")


def test_steps_a_killed_child_runner_left_get_term(tmp_path: Path, home: Path) -> None:
    """CALL-2, TIME-1: the child's runner dies (kill -9) while its step runs; the step,
    stopped with the call step, gets SIGTERM (its trap runs, once) before the KILL that
    follows kill_grace later. It got only the KILL: no runner was left to pass TERM on."""
    (tmp_path / "flow.yaml").write_text(
        "name: parent\nkill_grace: 30s\nsteps:\n"
        "  - {name: sub, call: child.yaml}\n"
        # Keeps the run going (its end kills what is left at once) until the trap ran.
        "  - {name: watch, needs: [], timeout: 60s,"
        " run: 'until [ -s got ]; do sleep 0.05; done'}\n")
    (tmp_path / "child.yaml").write_text(
        "name: child\nsteps:\n"
        "  - {name: c1, run: \"trap 'echo term >> got; exit 0' TERM; echo $$ > c1.pid;"
        " sleep 60 & wait\"}\n")
    proc = subprocess.Popen([sys.executable, "-m", "flowsh", "run", "flow.yaml"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(tmp_path / "c1.pid", proc)
        step_pid = int((tmp_path / "c1.pid").read_text())
        os.kill(_child_runner(step_pid), signal.SIGKILL)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out
    assert "watch: succeeded" in out, out
    assert (tmp_path / "got").read_text() == "term\n"
    _wait_gone(step_pid)
