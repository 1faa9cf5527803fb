"""A real Redis (a dedicated db, flushed) and a real Celery worker for the whole session.

FLOWSH_CELERY_TEST_REDIS overrides the Redis URL (default redis://127.0.0.1:6379/8).
The worker consumes a queue unique to this session, so two sessions never share tasks.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# The repository's root, for the worker helper the main suite uses too.
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from tests.celery_worker import Cluster, Worker, start_worker

__all__ = ["REDIS", "Cluster", "Worker", "flowsh"]

REDIS = os.environ.get("FLOWSH_CELERY_TEST_REDIS", "redis://127.0.0.1:6379/8")


@pytest.fixture(scope="session")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    import redis

    client = redis.Redis.from_url(REDIS, socket_connect_timeout=2)
    client.flushdb()
    client.close()
    tag = uuid.uuid4().hex[:8]
    w = start_worker(f"flowsh-test-{tag}@%h", [f"flowsh-test-{tag}"], broker=REDIS,
                     log=tmp_path_factory.mktemp("celery") / "worker.log", concurrency=2)
    try:
        yield w
    finally:
        w.stop(timeout=20)


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


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    monkeypatch.setenv("FLOWSH_CELERY_BROKER", REDIS)
    # Broker and result backend: the session's Redis unless a test names others.
    c = Cluster(tmp_path / "hosts", broker=REDIS, backend=REDIS)
    try:
        yield c
    finally:
        c.stop()
