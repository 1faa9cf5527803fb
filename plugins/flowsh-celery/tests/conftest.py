"""A real Redis (a dedicated db, flushed) and a real Celery worker for the whole session.

FLOWSH_CELERY_TEST_REDIS overrides the Redis URL (default redis://127.0.0.1:6379/8).
The worker consumes a queue unique to this session, so two sessions never share tasks.
"""

from __future__ import annotations

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
