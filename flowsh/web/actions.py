"""Actions from the browser: start, resume, retry, interrupt.

Start, resume and retry run the CLI itself — `python -m flowsh run|resume|retry` — as a
detached process: its own session, stdio to files, argv items (a param is never spliced
into a shell string). The server going down never takes a run with it. A start is first
checked in this process with the CLI's own code (`check_workflow`: an answer at once, with
the file's line and column); resume and retry are refused by the command itself, whose
one-line error and exit code become the answer. Interrupt is what Ctrl-C or `kill` does to a
runner: SIGTERM to its pid, which stops its steps and records them `interrupted` (TIME-2).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from flowsh.errors import LockHeldError, NotFoundError, StateError, UsageError
from flowsh.model import IDENT
from flowsh.runopts import PARAMS_VAR
from flowsh.state import RUNNING, SUCCEEDED, RunRecord, ensure_private_dir, flowsh_home
from flowsh.web import data

START_WAIT = 15.0  # how long a start waits for the new run's id before answering


class Spawned:
    def __init__(self, proc: subprocess.Popen[bytes], out: Path, err: Path) -> None:
        self.proc, self.out, self.err = proc, out, err
        # The server is the parent: reap the child when it ends, so no zombie is left.
        threading.Thread(target=proc.wait, daemon=True).start()

    def error_line(self) -> str:
        try:
            text = self.err.read_text(errors="replace").strip()
        except OSError:
            text = ""
        lines = [ln.removeprefix("flowsh: error: ") for ln in text.splitlines()
                 if ln.startswith("flowsh: error: ")]
        return lines[-1] if lines else (text.splitlines()[-1] if text else "exited")


def _spawn(args: list[str], state: str | None, where: Path,
           extra: dict[str, str] | None = None) -> Spawned:
    """`python -m flowsh ARGS` in its own session; stdout and stderr to files in `where`."""
    ensure_private_dir(where)
    tag = uuid.uuid4().hex[:12]
    out, err = where / f"web-{tag}.out", where / f"web-{tag}.err"
    env = {**os.environ, **(extra or {})}
    env.pop("FLOWSH_UI_TOKEN", None)  # the server's secret is no business of a step's
    if state:
        env["FLOWSH_STATE"] = state
    try:
        with open(out, "wb") as fo, open(err, "wb") as fe:
            proc = subprocess.Popen(
                [sys.executable, "-m", "flowsh", *args], stdin=subprocess.DEVNULL, stdout=fo,
                stderr=fe, start_new_session=True, env=env, close_fds=True,
            )
    except (OSError, ValueError) as exc:
        # E2BIG: a value the kernel will not pass to a process; ValueError: a NUL in one.
        out.unlink(missing_ok=True)
        err.unlink(missing_ok=True)
        raise UsageError(f"cannot start flowsh: {getattr(exc, 'strerror', None) or exc}") from None
    return Spawned(proc, out, err)


def _refusal(spawned: Spawned) -> Exception:
    code = spawned.proc.returncode
    line = spawned.error_line()
    if code == 75:
        return LockHeldError(line)
    if code == 4:
        return NotFoundError(line)
    if code == 3:
        return StateError(line)
    return UsageError(line)


def start(url: str | None, known: data.Known, workflow: str,
          params: dict[str, str]) -> dict[str, Any]:
    """Validate as `flowsh run` does, start it, and return its run id once it has one."""
    from flowsh.checks import check_workflow
    from flowsh.loader import load_workflow, parse_overrides

    known.scan(max_age=0.0 if workflow not in known.files else 5.0)
    path = known.files.get(workflow)
    if path is None:
        raise NotFoundError(f"no workflow {workflow!r} among --workflows")
    for key in params:  # `WHO=x` would be read as WHO with `x=...` in front of its value
        if not IDENT.match(key):
            raise UsageError(f"parameter {key!r}: a name is letters, digits and _")
    pairs = [f"{k}={v}" for k, v in params.items()]
    wf = load_workflow(path)
    check_workflow(wf, parse_overrides(pairs))  # the CLI's own checks and messages
    where = ensure_private_dir(flowsh_home() / "web")
    # In the runner's environment, not its command line: anyone can read that (`ps`).
    spawned = _spawn(["run", "--json", str(path)], url, where,
                     {PARAMS_VAR: json.dumps(params)})
    deadline = time.monotonic() + START_WAIT
    while time.monotonic() < deadline:
        ended = spawned.proc.poll() is not None
        run_id = _first_run_id(spawned.out)
        if run_id:
            _keep_with_run(spawned, run_id)
            return {"run_id": run_id, "workflow": workflow, "pid": spawned.proc.pid}
        if ended:
            raise _refusal(spawned)
        time.sleep(0.02)
    # Answered "did not start": it must not start later either (a retried 409 would queue
    # one run more each time). TERM before it has a record leaves nothing behind.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(spawned.proc.pid, signal.SIGTERM)
    spawned.proc.wait()
    for path in (spawned.out, spawned.err):
        path.unlink(missing_ok=True)
    raise LockHeldError(f"workflow {workflow!r}: the run did not start within "
                        f"{START_WAIT:g}s (waiting for its lock?); it will not start")


def _keep_with_run(spawned: Spawned, run_id: str) -> None:
    """Move the runner's stdout/stderr files into its run's directory, so `flowsh prune`
    deletes them with the run (the runner keeps writing: a rename keeps the inode)."""
    run_dir = flowsh_home() / "runs" / run_id
    if not run_dir.is_dir():
        return
    for path in (spawned.out, spawned.err):
        try:
            os.replace(path, run_dir / path.name)
        except OSError:
            continue  # left in $FLOWSH_HOME/web: harmless


def _first_run_id(out: Path) -> str | None:
    try:
        with out.open(encoding="utf-8", errors="replace") as fh:
            first = fh.readline()
    except OSError:
        return None
    if not first.endswith("\n"):
        return None
    try:
        event = json.loads(first)
    except ValueError:
        return None
    run_id = event.get("run_id") if isinstance(event, dict) else None
    return run_id if isinstance(run_id, str) else None


def _follow_up(url: str | None, run_id: str, args: list[str]) -> dict[str, Any]:
    """Spawn resume/retry of `run_id`, then answer once it is running again, or refused."""
    run_dir = flowsh_home() / "runs" / run_id
    if data.runner_alive(url, data.load_run(url, run_id)):
        # Its record says finished, but its runner is still writing its end (plugins,
        # metrics): the CLI would refuse now too.
        raise LockHeldError(f"run {run_id} is still finishing; try again in a moment")
    spawned = _spawn(args, url, run_dir)
    deadline = time.monotonic() + START_WAIT
    while time.monotonic() < deadline:
        # Running again means: the record names the new runner.
        if data.load_run(url, run_id).pid == spawned.proc.pid:
            return {"run_id": run_id, "pid": spawned.proc.pid}
        if spawned.proc.poll() is not None:
            if spawned.proc.returncode in (0, 1, 130):  # it ran (a quick one) and ended
                return {"run_id": run_id, "pid": spawned.proc.pid}
            raise _refusal(spawned)
        time.sleep(0.02)
    return {"run_id": run_id, "pid": spawned.proc.pid}


def _startable(known: data.Known, run: RunRecord) -> None:
    """Only a workflow of --workflows runs from here: a run of any other file is shown,
    never started again (docs/ui.md)."""
    known.scan(max_age=5.0)
    files = {os.path.realpath(p) for p in known.files.values()}
    if not run.file or os.path.realpath(run.file) not in files:
        raise UsageError(f"run {run.run_id}: its file {run.file or '(none)'} is not among "
                         "--workflows; resume it with the CLI")


def resume(url: str | None, known: data.Known, run_id: str) -> dict[str, Any]:
    """`flowsh resume`: its own checks (the file, gone steps, nothing to resume) refuse it,
    and its one-line error comes back as the answer."""
    run = data.load_run(url, run_id)  # an unknown id or ambiguous prefix: 404/422 at once
    _startable(known, run)
    if run.status == RUNNING:
        raise LockHeldError(f"run {run.run_id} is still running (pid {run.pid} on {run.host})")
    if run.status == SUCCEEDED:
        # Whether or not its runner is still writing its end: the CLI's answer, at once.
        raise UsageError(f"run {run.run_id} succeeded; nothing to resume (retry a step "
                         "to run it again)")
    return _follow_up(url, run.run_id, ["resume", "--quiet", run.run_id])


def retry(url: str | None, known: data.Known, run_id: str, step: str,
          downstream: bool) -> dict[str, Any]:
    """`flowsh retry --step STEP [--downstream]`, refused as the command refuses it."""
    run = data.load_run(url, run_id)
    if "\0" in step:  # no step has one (workflow files refuse it); nor can an argv item
        raise NotFoundError(f"run {run.run_id} has no step {step!r}")
    _startable(known, run)
    if run.status == RUNNING:
        raise LockHeldError(f"run {run.run_id} is still running (pid {run.pid})")
    args = ["retry", "--quiet", run.run_id, "--step", step]
    return _follow_up(url, run.run_id, [*args, "--downstream"] if downstream else args)


def interrupt(url: str | None, run_id: str) -> dict[str, Any]:
    run = data.load_run(url, run_id)
    if run.status != RUNNING or run.pid is None:
        raise UsageError(f"run {run.run_id} is {run.status}, not running: nothing to interrupt")
    if run.host and run.host != socket.gethostname():
        raise UsageError(f"run {run.run_id} runs on {run.host}: interrupt it there")
    # The runner's lock says the pid is still that runner's (not a reused pid).
    if not data.runner_alive(url, run, heartbeat=False):
        raise UsageError(f"run {run.run_id}: its runner (pid {run.pid}) is gone")
    try:
        os.kill(run.pid, signal.SIGTERM)
    except ProcessLookupError:
        raise UsageError(f"run {run.run_id}: its runner (pid {run.pid}) is gone") from None
    return {"run_id": run.run_id, "pid": run.pid, "signal": "SIGTERM"}
