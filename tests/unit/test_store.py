"""flowsh.store: opening a backend by URL, and crash detection by the runner's lock."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowsh.errors import UsageError
from flowsh.lock import hold_runner_lock
from flowsh.state import CRASHED, INTERRUPTED, RUNNING, SUCCEEDED, StateBackend, flowsh_home
from flowsh.store import STALE_AFTER, check_liveness, open_backend, open_existing, state_url

from . import backend_cases as cases


@pytest.fixture
def backend() -> Iterator[StateBackend]:
    b = open_backend()
    try:
        yield b
    finally:
        b.close()


def test_open_existing_makes_no_store(tmp_path: Path) -> None:
    """A reader opens a store that is there, and makes none that is not."""
    for url, made in ((f"sqlite://{tmp_path / 'a' / 'x.db'}", tmp_path / "a"),
                      (f"json://{tmp_path / 'j'}", tmp_path / "j")):
        assert open_existing(url) is None and not made.exists(), url
        open_backend(url).close()
        found = open_existing(url)
        assert found is not None, url
        found.close()
    memory = open_existing("sqlite://:memory:")
    assert memory is not None
    memory.close()


def test_state_url_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    assert state_url().startswith("sqlite://")
    assert str(flowsh_home()) in state_url()
    monkeypatch.setenv("FLOWSH_STATE", "json:///tmp/x")
    assert state_url() == "json:///tmp/x"
    assert state_url("sqlite:///given.db") == "sqlite:///given.db"


def test_unknown_scheme_lists_known_ones() -> None:
    with pytest.raises(UsageError, match=r"unknown scheme 'redis' \(known: .*json://.*sqlite://"):
        open_backend("redis://localhost")


def _running_here(backend: StateBackend, run_id: str) -> Path:
    run = cases.record(run_id)
    run.steps["a"].status = RUNNING
    backend.create_run(run)
    run_dir = flowsh_home() / "runs" / run_id
    run_dir.mkdir(parents=True)
    return run_dir


def test_a_live_runner_keeps_its_run_running(backend: StateBackend) -> None:
    run_dir = _running_here(backend, "live1")
    held = hold_runner_lock(run_dir)
    assert held is not None
    try:
        assert check_liveness(backend, backend.load_run("live1")).status == RUNNING
    finally:
        held.release()


def test_a_dead_runner_means_crashed(backend: StateBackend) -> None:
    run_dir = _running_here(backend, "dead1")
    code = ("import sys; from pathlib import Path; from flowsh.lock import hold_runner_lock\n"
            "assert hold_runner_lock(Path(sys.argv[1])) is not None")
    subprocess.run([sys.executable, "-c", code, str(run_dir)], check=True, timeout=60)
    got = check_liveness(backend, backend.load_run("dead1"))
    assert got.status == CRASHED and got.ended_at is not None
    assert got.steps["a"].status == INTERRUPTED
    assert got.steps["a"].message == "the runner died (crash)"
    stored = backend.load_run("dead1")
    assert stored.status == CRASHED and stored.steps["a"].status == INTERRUPTED


def test_another_hosts_run_judged_by_heartbeat(backend: StateBackend) -> None:
    fresh, stale = cases.record("fresh1"), cases.record("stale1")
    fresh.heartbeat = time.time()
    stale.heartbeat = time.time() - STALE_AFTER - 5
    for r in (fresh, stale):
        backend.create_run(r)
    assert check_liveness(backend, backend.load_run("fresh1")).status == RUNNING
    assert check_liveness(backend, backend.load_run("stale1")).status == CRASHED


def test_finished_runs_untouched(backend: StateBackend) -> None:
    run = cases.record("done1")
    run.status = SUCCEEDED
    backend.create_run(run)
    assert check_liveness(backend, run) is run
