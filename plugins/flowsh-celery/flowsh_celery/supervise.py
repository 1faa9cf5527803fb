"""The supervisor of one pool process of a flowsh-celery worker (see worker.py).

Run as `python -` with this code on stdin (SUPERVISE_CODE), the pipe from its pool process
on fd SUPERVISE_FD and its settings in $FLOWSH_CELERY_SUPERVISE: its command line names no
celery module, so `pkill -9 -f celery` aimed at a stuck worker leaves it to stop the step.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import time
from typing import Any

from flowsh_celery.app import events_key, task_key

TAG_VAR = "FLOWSH_CELERY_TASK"  # in every process of the step: found even outside its group
SUPERVISE_VAR = "FLOWSH_CELERY_SUPERVISE"
SUPERVISE_FD = 3
SUPERVISE_CODE = b"from flowsh_celery.supervise import main\nmain()\n"


def main() -> None:
    conf = json.loads(os.environ.pop(SUPERVISE_VAR))
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
    # Imported now, not when a step must be stopped: on a host that thaws, the step runs
    # again while the supervisor would be importing.
    import flowsh.api  # noqa: F401
    import redis  # noqa: F401

    _supervise(SUPERVISE_FD, str(conf["backend"]), str(conf["worker"]))


# The pool process tells it, over a pipe, which step's process group it runs ("w"), that
# a heartbeat reached Redis (".") and that the step ended ("d"). It reads EOF when the
# pool process dies, however it dies.


def _supervise(read_fd: int, backend: str, worker: str) -> None:
    """On EOF (the pool process died) or no tick for the
    attempt's limit (it is stopped or hung), stop the watched step's processes, tell its
    runner, and (on EOF) exit."""
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)
    watched: dict[str, Any] | None = None
    last = time.monotonic()
    buf = b""
    while True:
        wait = None if watched is None else max(0.0, last + watched["limit"] - time.monotonic())
        ready, _, _ = select.select([read_fd], [], [], wait)
        # Checked before reading: a host frozen whole (a paused VM) thaws all at once,
        # and a tick the pool process wrote on waking must not hide the lapse.
        late = time.monotonic() - last
        if watched is not None and late >= watched["limit"]:
            # Much later than the limit: this supervisor was frozen too, the runner may
            # already run the step elsewhere: no grace.
            overslept = late > watched["limit"] * 1.5
            _lost({**watched, "grace": 0.0} if overslept else watched, backend,
                  f"its pool process on worker {worker} stopped answering: no heartbeat "
                  f"written for {late:.1f}s (limit {watched['limit']:g}s)")
            watched = None
        if not ready:
            continue
        try:
            data = os.read(read_fd, 65536)
        except OSError:
            data = b""
        if not data:
            if watched is not None:
                _lost(watched, backend, f"its pool process on worker {worker} died")
            os._exit(0)
        last = time.monotonic()
        buf += data
        buf = buf.lstrip(b".")
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            line = line.lstrip(b".")  # ticks carry no newline of their own
            if line.startswith(b"w "):
                watched = json.loads(line[2:])
            elif line == b"d":
                watched = None


def _lost(watched: dict[str, Any], backend: str, why: str) -> None:
    _stop_group(int(watched["pgid"]), str(watched["task"]), float(watched["grace"]))
    with contextlib.suppress(Exception):
        import redis

        r = redis.Redis.from_url(backend, socket_timeout=5, socket_connect_timeout=5)
        key = events_key(str(watched["client"]))
        pipe = r.pipeline()
        pipe.delete(task_key("beat", str(watched["task"])))
        pipe.rpush(key, json.dumps({"e": "lost", "t": watched["task"],
                                    "why": f"{why}; its processes were stopped"}))
        pipe.expire(key, 86400)
        pipe.execute()
        r.close()


def _stop_group(pgid: int, task_id: str, grace: float) -> None:
    if grace <= 0:  # the group first, before anything slower (the tagged strays' scan)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    from flowsh.api import signal_marked, tagged

    def send(sig: int) -> bool:
        alive = True
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            alive = False
        except PermissionError:
            pass
        return bool(signal_marked(pgid, TAG_VAR, task_id, sig)) or alive

    if grace <= 0:
        send(signal.SIGKILL)
        return
    if not send(signal.SIGTERM):
        return
    end = time.monotonic() + grace
    while time.monotonic() < end:
        time.sleep(0.05)
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            if not tagged(TAG_VAR, task_id):
                return
    send(signal.SIGKILL)


