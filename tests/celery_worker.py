"""Real Celery workers of flowsh-celery, started one way for every test and trial script.

A worker runs `celery -A flowsh_celery.worker worker` (prefork, no gossip, mingle or
heartbeat: nothing between workers that flowsh relies on) in a session of its own, so that
its pool processes and their supervisors go down with one killpg. Each caller chooses its
broker and result backend, its queues, its node name and the directory the worker runs in
(a directory of its own stands for a host). A worker is ready for flowsh once it advertises
its queues in its result backend: a runner checks there before it submits a step.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    name: str  # the node name, %h expanded: the one flowsh records and adverts carry
    queues: list[str]
    broker: str
    backend: str
    log: Path

    @property
    def queue(self) -> str:
        return self.queues[0]

    def pool_pids(self) -> set[int]:
        """The worker's pool processes (the ones that run the steps)."""
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)],
                             capture_output=True, text=True, check=False).stdout
        return {int(p) for p in out.split()}

    def kill(self) -> None:
        """Everything of the worker at once, stopped ones too (a SIGSTOP test)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGCONT)
            for pid in self.pool_pids():
                os.kill(pid, signal.SIGCONT)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = 30, revoke_active: bool = False) -> None:
        """Warm shutdown (it waits for its tasks), then the group killed if it lingers.
        `revoke_active`: first stop what still runs (a step a killed coordinator left
        behind) the way flowsh does, TERM then KILL of its group by its pool process."""
        if revoke_active and self.proc.poll() is None:
            from flowsh_celery.app import make_app

            app = make_app(self.broker, self.backend, self.queue)
            try:
                active = app.control.inspect(destination=[self.name], timeout=1).active() or {}
                for task in (t for tasks in active.values() for t in tasks):
                    app.control.revoke(task["id"], terminate=True, signal="SIGTERM")
            finally:
                app.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, sessions of their own included (a step's supervisor)."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True,
                         check=False).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        p, pp = (int(x) for x in line.split())
        children.setdefault(pp, []).append(p)
    found, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            found.append(c)
            todo.append(c)
    return found


def node_name(prefix: str) -> str:
    """A node name unique to this start (`-n`), %h left for celery to expand."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}@%h"


def start_worker(node: str, queues: Sequence[str], *, broker: str, backend: str | None = None,
                 log: Path, cwd: Path | None = None, concurrency: int = 1,
                 env: dict[str, str] | None = None, ready: bool = True,
                 limit: float = 60, loglevel: str = "INFO") -> Worker:
    """A worker consuming `queues`. `backend` None: the broker's URL (the plugin's
    default), FLOWSH_CELERY_BACKEND unset. FLOWSH_CELERY_QUEUE is set to the first queue,
    for runners started with this environment."""
    full = {**os.environ, "FLOWSH_CELERY_BROKER": broker, "FLOWSH_CELERY_QUEUE": queues[0],
            **(env or {})}
    full.pop("FLOWSH_CELERY_BACKEND", None)
    if backend is not None:
        full["FLOWSH_CELERY_BACKEND"] = backend
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "flowsh_celery.worker", "worker",
             "-Q", ",".join(queues), "-n", node, "-c", str(concurrency), "--pool", "prefork",
             "-l", loglevel, "--without-gossip", "--without-mingle", "--without-heartbeat"],
            env=full, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    w = Worker(proc, node.replace("%h", os.uname().nodename), list(queues), broker,
               backend or broker, log)
    if ready:
        try:
            wait_ready(w, limit)
        except BaseException:
            w.kill()
            raise
    return w


@contextlib.contextmanager
def running(prefix: str, *, broker: str, log: Path, concurrency: int = 2,
            revoke_active: bool = False) -> Iterator[Worker]:
    """A worker on a queue of its own (`flowsh-PREFIX-TAG`) for a block; warm shutdown
    after it (`revoke_active`: see Worker.stop)."""
    tag = uuid.uuid4().hex[:8]
    w = start_worker(f"{prefix}-{tag}@%h", [f"flowsh-{prefix}-{tag}"], broker=broker,
                     log=log, concurrency=concurrency)
    try:
        yield w
    finally:
        w.stop(revoke_active=revoke_active)


def wait_ready(w: Worker, limit: float = 60) -> None:
    """Until the worker advertises itself in its result backend (RuntimeError with its log
    when it exits or takes longer than `limit`)."""
    import redis

    r = redis.Redis.from_url(w.backend, socket_connect_timeout=2)
    try:
        deadline = time.monotonic() + limit
        while not r.exists(f"flowsh:worker:{w.name}"):
            if w.proc.poll() is not None:
                raise RuntimeError("celery worker exited:\n" + w.log.read_text())
            if time.monotonic() > deadline:
                raise RuntimeError(f"celery worker not ready after {limit:g}s:\n"
                                   + w.log.read_text())
            time.sleep(0.05)
    finally:
        r.close()


@dataclass
class Cluster:
    """Workers started by one test, each in a directory of its own (a "host"), with a
    distinct node name; all killed (with their supervisors' steps) when it ends."""

    root: Path
    broker: str = ""  # start()'s defaults
    backend: str | None = None  # None: the broker's URL
    workers: list[Worker] = field(default_factory=list)

    def start(self, name: str, queues: Sequence[str], broker: str | None = None,
              backend: str | None = None, *, concurrency: int = 1, ready: bool = True,
              env: dict[str, str] | None = None, loglevel: str = "INFO") -> Worker:
        host = self.root / name
        host.mkdir(parents=True, exist_ok=True)
        w = start_worker(node_name(name), queues, broker=broker or self.broker,
                         backend=backend or self.backend, log=host / "worker.log", cwd=host,
                         concurrency=concurrency, env=env, ready=False, loglevel=loglevel)
        self.workers.append(w)
        if ready:
            wait_ready(w)
        return w

    def stop(self) -> None:
        for w in self.workers:
            w.kill()
        self.workers.clear()
