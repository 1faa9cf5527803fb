"""What the red-team reproducers (tests/test_redteam_*.py) share: the strict xfail of
findings still open, the celery worker behind the conformance harness's `celery` runtime,
and running a case, the CLI or an exported script. One copy here, so a fix to how a
reproducer runs reaches every round."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.celery_worker import running
from tests.conformance import harness

LOCAL = ("run", "script", "inline")
ALL = (*LOCAL, "celery")


def open_findings(label: str, open_: frozenset[str]) -> Any:
    """An autouse fixture marking the tests named in `open_` strict xfails, so that a fix
    shows as an unexpected pass (to be removed from the set). Bind it at module level:
    `_open_findings = redteam_kit.open_findings("rt16", OPEN)`."""

    @pytest.fixture(autouse=True)
    def _open_findings(request: pytest.FixtureRequest) -> None:
        if request.node.name in open_:
            request.applymarker(
                pytest.mark.xfail(strict=True, reason=f"{label} finding still open"))

    return _open_findings


def celery_runtime(label: str, redis: str) -> tuple[Any, Any]:
    """The module-scoped `celery_worker` fixture (a real flowsh-celery worker, prefork, on
    a queue named `label` with broker `redis`, as the conformance suite starts one) and the
    `runtime` fixture for `indirect=True` parametrization that brings it up for `celery`.
    Bind both at module level under those names."""

    @pytest.fixture(scope="module")
    def celery_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
        with running(label, broker=redis,
                     log=tmp_path_factory.mktemp("celery") / "worker.log") as w, \
                harness.serving(w):
            yield

    @pytest.fixture
    def runtime(request: pytest.FixtureRequest) -> str:
        name: str = request.param
        if name == "celery":
            request.getfixturevalue("celery_worker")
        return name

    return celery_worker, runtime


def case(id: str, workflow: Any, files: dict[str, str] | None = None,
         **kw: Any) -> harness.Case:
    return harness.Case(id=id, proves=[], workflow=workflow, files=files or {}, **kw)


def case_maker(id: str) -> Callable[..., harness.Case]:
    """`case` with its id bound: a module's `_case(workflow, files, **kw)`."""

    def _case(workflow: Any, files: dict[str, str] | None = None, **kw: Any) -> harness.Case:
        return case(id, workflow, files, **kw)

    return _case


def run_case(case: harness.Case, runtime: str, root: Path,
             read: tuple[str, ...] = ()) -> tuple[harness.Result, dict[str, str | None]]:
    """The case's first invocation on `runtime`, and the files `read` as it left them."""
    runner = harness.Runner(case, runtime, root)
    runner.prepare()
    result = runner.invoke([str(a) for a in case.args], {})
    return result, {rel: runner.read(rel) for rel in read}


def two_steps(id: str, lib: str) -> harness.Case:
    """Steps a and b each calling `f` of `lib.sh` (which appends its argument to `calls`),
    after the top-level text `lib`."""
    return case(id, {"source": "lib.sh", "steps": [{"name": "a", "run": "f a"},
                                                   {"name": "b", "run": "f b"}]},
                {"lib.sh": "f() { echo \"$1\" >> calls; }\n" + lib})


def flowsh(*args: str, cwd: Path, home: Path | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The CLI without entry-point plugins; FLOWSH_HOME is `home` when given (else the
    test's own, from conftest)."""
    env = {**os.environ, "FLOWSH_LOAD_ENTRYPOINTS": "0"}
    if home is not None:
        env["FLOWSH_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "flowsh", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def validate(tmp_path: Path, lib: str) -> subprocess.CompletedProcess[str]:
    """`flowsh validate` of a one-step workflow sourcing `lib.sh` (`f`, then `lib`)."""
    (tmp_path / "lib.sh").write_text("f() { :; }\n" + lib)
    (tmp_path / "flow.yaml").write_text("source: lib.sh\nsteps:\n  - {name: a, run: f}\n")
    return flowsh("validate", "flow.yaml", cwd=tmp_path, home=tmp_path / ".home")


def ok(r: subprocess.CompletedProcess[str]) -> None:
    assert r.returncode == 0, r.stdout + r.stderr


def script(path: Path, *args: str, home: Path,
           now: str | None = None) -> subprocess.CompletedProcess[str]:
    """An exported script under `env -i PATH=/usr/bin:/bin FLOWSH_HOME=home` (and
    FLOWSH_NOW when `now` is given), from its own directory."""
    env = {"PATH": "/usr/bin:/bin", "FLOWSH_HOME": str(home)}
    if now is not None:
        env["FLOWSH_NOW"] = now
    return subprocess.run(["bash", str(path), *args], cwd=path.parent, env=env, text=True,
                          capture_output=True, timeout=120, check=False)
