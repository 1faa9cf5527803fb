"""Shared fixtures: every test gets its own FLOWSH_HOME and no third-party plugins."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flowsh import plugins

ROOT = Path(__file__).resolve().parent.parent
# The machine's PostgreSQL: tests of `postgresql://` state each take a schema of their own.
PG_SERVER = "postgresql://postgres@127.0.0.1:5432/test"


def pg_server_or_skip() -> Any:
    """psycopg, once the server answers; else the test (or the module, at import) is
    skipped, except on CI, whose machine has the server: its absence is a failure there."""
    psycopg = pytest.importorskip("psycopg")
    try:
        psycopg.connect(PG_SERVER, connect_timeout=3).close()
    except psycopg.Error:
        if os.environ.get("CI"):
            raise RuntimeError(f"no PostgreSQL at {PG_SERVER} (the machine's service is not "
                               "running)") from None
        pytest.skip(f"no PostgreSQL at {PG_SERVER}", allow_module_level=True)
    return psycopg


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A state URL whose schema is this test's alone (flowsh creates it on first use; it is
    dropped after), so xdist workers never meet."""
    psycopg = pg_server_or_skip()
    schema = f"flowsh_test_{uuid.uuid4().hex[:12]}"
    yield f"{PG_SERVER}?options=-csearch_path%3D{schema}"
    with psycopg.connect(PG_SERVER, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(autouse=True)
def flowsh_env(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("flowsh-home")
    monkeypatch.setenv("FLOWSH_HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("FLOWSH_LOAD_ENTRYPOINTS", "0")
    monkeypatch.delenv("FLOWSH_STATE", raising=False)
    monkeypatch.delenv("FLOWSH_PLUGINS", raising=False)
    monkeypatch.delenv("FLOWSH_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("FLOWSH_METRICS_PUSH", raising=False)
    plugins.reset()
    yield home
    plugins.reset()


@pytest.fixture
def home(flowsh_env: Path) -> Path:
    return flowsh_env


@pytest.fixture
def write_flow(tmp_path: Path) -> Callable[..., Path]:
    """Write a workflow file (dedented YAML) into tmp_path and return its path."""

    def write(text: str, name: str = "flow.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    return write


def emit_event(event: str, *, run: Any, workflow: Any, **kwargs: Any) -> None:
    """A run event to every plugin, as the engine's dispatcher sends it (with a context)."""
    from flowsh.events import RunContext
    from flowsh.secrets import Masker

    ctx = RunContext(run=run, workflow=workflow, masker=Masker.for_workflow(workflow),
                     run_dir=Path(os.environ["FLOWSH_HOME"]) / "runs" / run.run_id)
    plugins.emit(event, ctx=ctx, run=run, workflow=workflow, **kwargs)
    from flowsh.builtin import alerts

    alerts.wait_sent(ctx)  # alerts go out on threads of their own; the test reads them now


def sigint_default() -> None:
    """preexec_fn for a child a test sends SIGINT: Ctrl-C as at a terminal. A suite started
    as a background job (`... &` in a script, some CI runners) hands its children SIGINT
    ignored, and Python then installs no KeyboardInterrupt handler at all."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 120, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """The real `flowsh` CLI as a subprocess (its own signals, exit codes and streams)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "flowsh", *args], cwd=cwd, env=full_env, text=True,
        capture_output=True, timeout=timeout, input=input, check=False,
    )


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    return run_cli


def alive(pid: int) -> bool:
    """Running, and not a zombie (in a container nothing may reap an orphan's remains)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def poll(cond: Callable[[], object], what: str, limit: float = 60.0) -> None:
    """Until `cond()` is true; AssertionError naming `what` after `limit` seconds."""
    import time

    end = time.monotonic() + limit
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def wait_dead(pid: int, seconds: float = 5.0) -> bool:
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 512 KiB filesystem (tmpfs) to fill up; needs root, as CI has."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs", str(mnt)],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill_disk(directory: Path) -> None:
    """Write until the filesystem under `directory` is full."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"x" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


def cli_in_process(*argv: str) -> int:
    """`flowsh ARGV` in this process (plugins registered by a test take part); its exit code."""
    from flowsh.cli import main

    try:
        main(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
