"""A real Redis (a dedicated db, flushed) and a real Celery worker for the whole session.

FLOWSH_CELERY_TEST_REDIS overrides the Redis URL (default redis://127.0.0.1:6379/8).
The worker consumes a queue unique to this session, so two sessions never share tasks.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REDIS = os.environ.get("FLOWSH_CELERY_TEST_REDIS", "redis://127.0.0.1:6379/8")


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    name: str
    queue: str
    broker: str
    log: Path
    backend: str = ""

    def pool_pids(self) -> set[int]:
        """The worker's pool processes (the ones that run the steps)."""
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)],
                             capture_output=True, text=True, check=False).stdout
        return {int(p) for p in out.split()}


@pytest.fixture(scope="session")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    import redis

    client = redis.Redis.from_url(REDIS, socket_connect_timeout=2)
    client.flushdb()
    client.close()
    tag = uuid.uuid4().hex[:8]
    name, queue = f"flowsh-test-{tag}@%h", f"flowsh-test-{tag}"
    log = tmp_path_factory.mktemp("celery") / "worker.log"
    env = {**os.environ, "FLOWSH_CELERY_BROKER": REDIS, "FLOWSH_CELERY_QUEUE": queue}
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "flowsh_celery.worker", "worker",
             "-Q", queue, "-n", name, "-c", "2", "--pool", "prefork", "-l", "INFO",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    w = Worker(proc, name.replace("%h", os.uname().nodename), queue, REDIS, log)
    try:
        _wait_ready(w)
        yield w
    finally:
        proc.send_signal(signal.SIGTERM)  # warm shutdown
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_ready(w: Worker) -> None:
    from flowsh_celery.app import make_app

    app = make_app(w.broker, w.broker, w.queue)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if w.proc.poll() is not None:
                raise RuntimeError("celery worker exited:\n" + w.log.read_text())
            # Ready for flowsh once it says so in the result backend (runners check there
            # which workers consume a queue).
            if app.control.ping(destination=[w.name], timeout=0.5) and \
                    app.backend.client.exists(f"flowsh:worker:{w.name}"):
                return
        raise RuntimeError("celery worker not ready after 30s:\n" + w.log.read_text())
    finally:
        app.close()


@pytest.fixture(autouse=True)
def flowsh_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("FLOWSH_HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    # Load this plugin through its entry point, and no other third-party plugin.
    monkeypatch.setenv("FLOWSH_LOAD_ENTRYPOINTS", "1")
    monkeypatch.setenv("FLOWSH_PLUGINS", "celery")
    for var in ("FLOWSH_STATE", "FLOWSH_DISABLE_PLUGINS", "FLOWSH_CELERY_BACKEND",
                "FLOWSH_METRICS_PUSH"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def celery_env(worker: Worker, monkeypatch: pytest.MonkeyPatch) -> Worker:
    monkeypatch.setenv("FLOWSH_CELERY_BROKER", worker.broker)
    monkeypatch.setenv("FLOWSH_CELERY_QUEUE", worker.queue)
    return worker


@pytest.fixture
def write_flow(tmp_path: Path) -> Callable[..., Path]:
    def write(text: str, name: str = "flow.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    return write


def flowsh(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flowsh", *args], capture_output=True,
                          text=True, timeout=timeout, check=False)


class Cluster:
    """Workers started by one test, each in a directory of its own (a "host"), with a
    distinct node name; all killed (with their supervisors' steps) when the test ends."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.workers: list[Worker] = []

    def start(self, name: str, queues: list[str], *, backend: str | None = None,
              broker: str = REDIS, concurrency: int = 1, ready: bool = True,
              extra_env: dict[str, str] | None = None) -> Worker:
        host = self.root / name
        host.mkdir(parents=True, exist_ok=True)
        log = host / "worker.log"
        env = {**os.environ, "FLOWSH_CELERY_BROKER": broker,
               "FLOWSH_CELERY_BACKEND": backend or REDIS, **(extra_env or {})}
        node = f"{name}-{uuid.uuid4().hex[:6]}@%h"
        with open(log, "wb") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "flowsh_celery.worker", "worker",
                 "-Q", ",".join(queues), "-n", node, "-c", str(concurrency), "--pool",
                 "prefork", "-l", "INFO", "--without-gossip", "--without-mingle",
                 "--without-heartbeat"],
                env=env, cwd=host, stdout=fh, stderr=subprocess.STDOUT,
                start_new_session=True)
        w = Worker(proc, node.replace("%h", os.uname().nodename), queues[0], broker, log,
                   backend or REDIS)
        self.workers.append(w)
        if ready:
            wait_registered(w, backend or REDIS)
        return w

    def stop(self) -> None:
        for w in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(w.proc.pid, signal.SIGCONT)
                for pid in w.pool_pids():
                    os.kill(pid, signal.SIGCONT)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(w.proc.pid, signal.SIGKILL)
            w.proc.wait()


def wait_registered(w: Worker, backend: str, limit: float = 60) -> None:
    import redis

    r = redis.Redis.from_url(backend)
    try:
        deadline = time.monotonic() + limit
        while not r.exists(f"flowsh:worker:{w.name}"):
            if w.proc.poll() is not None:
                raise RuntimeError("celery worker exited:\n" + w.log.read_text())
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker not registered after {limit}s:\n"
                                   + w.log.read_text())
            time.sleep(0.1)
    finally:
        r.close()


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    monkeypatch.setenv("FLOWSH_CELERY_BROKER", REDIS)
    c = Cluster(tmp_path / "hosts")
    try:
        yield c
    finally:
        c.stop()
