"""The worker side: ``celery -A flowsh_celery.worker worker -Q flowsh``.

Configured from FLOWSH_CELERY_BROKER, FLOWSH_CELERY_BACKEND and FLOWSH_CELERY_QUEUE (the
default queue when the worker is started without ``-Q``). The task runs a step exactly as
``flowsh run`` would on this machine, through flowsh's own LocalExecutor: its own process
group, the step's timeout with TERM then KILL after the grace period, a revoke (or the
pool process being told to stop) turning into the same TERM/KILL of the step's group.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from dataclasses import fields
from typing import Any

from flowsh_celery.app import TASK_NAME, make_app, settings

# What travels back: the tail of the output. The whole log stays out of the result store.
OUTPUT_CAP = 1 << 20
OUTPUTS_CAP = 1 << 20


def run_request(data: dict[str, Any], secrets: list[str], worker: str) -> dict[str, Any]:
    """Run one StepRequest (as a dict) here and return its outcome as a dict.

    The log and $FLOWSH_OUTPUT go to a private temporary directory on this machine, not
    to the paths in the request (those are the flowsh host's): their contents are
    returned, and flowsh writes them where the engine expects them.
    """
    import time

    from flowsh.api import LocalExecutor, Masker, StepRequest

    known = {f.name for f in fields(StepRequest)}
    req_fields = {k: v for k, v in data.items() if k in known}
    cwd = req_fields.get("cwd", "")
    if not os.path.isdir(cwd):
        now = time.time()
        return {
            "exit_code": 127, "started_at": now, "ended_at": now, "signal": None,
            "timed_out": False, "interrupted": False, "worker": worker, "pid": os.getpid(),
            "error": f"working directory {cwd} does not exist on worker {worker} "
                     "(flowsh-celery needs the workflow's directory at the same path)",
            "output": "", "dropped": 0, "outputs": "",
        }
    tmp = tempfile.mkdtemp(prefix="flowsh-celery-")
    try:
        log_path = os.path.join(tmp, "step.log")
        out_path = os.path.join(tmp, "step.out")
        with open(out_path, "w"):
            pass
        env = dict(req_fields.get("env") or {})
        env["FLOWSH_OUTPUT"] = out_path
        env["CELERY_WORKER"] = worker
        req = StepRequest(**{**req_fields, "env": env, "log_path": log_path})
        masker = Masker(secrets)
        executor = LocalExecutor(mask=masker if masker else None)
        stop: list[int] = []

        def on_signal(signum: int, _frame: object) -> None:
            stop.append(signum)
            executor.wake()

        # A revoke with terminate=True signals this pool process: pass it on to the
        # step's process group the way flowsh does on Ctrl-C, then report it.
        old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            executor.start(req)
            done: list[Any] = []
            cancelled = False
            while not done:
                if stop and not cancelled:
                    executor.cancel_all()
                    cancelled = True
                done = executor.wait(None)
            executor.close()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        outcome = done[0][1]
        output, dropped = _tail(log_path, OUTPUT_CAP)
        outputs, _ = _tail(out_path, OUTPUTS_CAP)
        return {
            "exit_code": outcome.exit_code,
            "started_at": outcome.started_at,
            "ended_at": outcome.ended_at,
            "signal": outcome.signal,
            "timed_out": outcome.timed_out,
            "interrupted": outcome.interrupted,
            "error": outcome.error,
            "worker": worker,
            "pid": os.getpid(),
            "output": output,
            "dropped": dropped,
            "outputs": outputs,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _tail(path: str, cap: int) -> tuple[str, int]:
    """The last `cap` bytes of a file as text, and how many bytes were left out."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            dropped = max(0, size - cap)
            fh.seek(dropped)
            data = fh.read()
    except FileNotFoundError:
        return "", 0
    if dropped:
        # Start at a line boundary so the first line shown is whole.
        cut = data.find(b"\n")
        if 0 <= cut < len(data) - 1:
            dropped += cut + 1
            data = data[cut + 1:]
    return data.decode("utf-8", "replace"), dropped


def _quiet_results() -> None:
    """Log a task's end without its result: celery's line carries the return value, which
    holds the step's output and its $FLOWSH_OUTPUT lines, and an output named like a secret
    (API_TOKEN=...) becomes secret only once written, too late for the worker to mask it:
    it stayed in the worker's log in clear (SECRET-1)."""
    from celery.app import trace

    trace.LOG_SUCCESS = "Task %(name)s[%(id)s] succeeded in %(runtime)ss"


_quiet_results()
_broker, _backend, _queue = settings()
app = make_app(_broker, _backend, _queue)


@app.task(name=TASK_NAME, bind=True)  # type: ignore[untyped-decorator]
def run_step(self: Any, request: dict[str, Any], secrets: list[str] | None = None) -> Any:
    worker = self.request.hostname or os.uname().nodename
    return run_request(request, list(secrets or []), worker)
