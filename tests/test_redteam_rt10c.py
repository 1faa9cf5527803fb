"""Red team rt10c (issue 10, third pass): the same workflow file must mean the same on
`flowsh run`, `flowsh validate`, the exported script (`--inline` too) and the Celery
executor (docs/semantics.md). Each test is a reproducer that failed on integ (ebe2b0c)
when written, run through the conformance harness on every runtime or with `flowsh
validate`; findings are listed in /work/wt/rt10c-findings.md."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.celery_worker import running
from tests.conformance import harness

LOCAL = ("run", "script", "inline")
ALL = (*LOCAL, "celery")
# Not the conformance suite's db 6 (its session fixture flushes it), rt10's 11, rt10b's 12.
REDIS = os.environ.get("FLOWSH_RT10C_REDIS", "redis://127.0.0.1:6379/13")

# Findings still open (rt10c-findings.md lists them): strict xfails, so that a fix shows as
# an unexpected pass to be removed from here.
OPEN = frozenset({
})


@pytest.fixture(autouse=True)
def _open_findings(request: pytest.FixtureRequest) -> None:
    if request.node.name in OPEN:
        request.applymarker(pytest.mark.xfail(strict=True, reason="rt10c finding still open"))



@pytest.fixture(scope="module")
def celery_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A real flowsh-celery worker (prefork) on a queue of its own, as the conformance
    suite starts one; the harness's `celery` runtime uses it."""
    with running("rt10c", broker=REDIS, log=tmp_path_factory.mktemp("celery") / "worker.log"
                 ) as w, harness.serving(w):
        yield


@pytest.fixture
def runtime(request: pytest.FixtureRequest) -> str:
    """The parametrized runtime; `celery` brings up the module's worker."""
    name: str = request.param
    if name == "celery":
        request.getfixturevalue("celery_worker")
    return name




def _case(workflow: Any, files: dict[str, str] | None = None, **kw: Any) -> harness.Case:
    return harness.Case(id="rt10c", proves=[], workflow=workflow, files=files or {}, **kw)


def _run(case: harness.Case, runtime: str, root: Path,
         read: tuple[str, ...] = ()) -> tuple[harness.Result, dict[str, str | None]]:
    """The case's first invocation on `runtime`, and the files `read` as it left them."""
    runner = harness.Runner(case, runtime, root)
    runner.prepare()
    result = runner.invoke([str(a) for a in case.args], {})
    return result, {rel: runner.read(rel) for rel in read}


def _flowsh(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLOWSH_LOAD_ENTRYPOINTS": "0", "FLOWSH_HOME": str(cwd / ".home")}
    return subprocess.run([sys.executable, "-m", "flowsh", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def _two_steps(lib: str) -> harness.Case:
    return _case({"source": "lib.sh", "steps": [{"name": "a", "run": "f a"},
                                                {"name": "b", "run": "f b"}]},
                 {"lib.sh": "f() { echo \"$1\" >> calls; }\n" + lib})


def _validate(tmp_path: Path, lib: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "lib.sh").write_text("f() { :; }\n" + lib)
    (tmp_path / "flow.yaml").write_text("source: lib.sh\nsteps:\n  - {name: a, run: f}\n")
    return _flowsh("validate", "flow.yaml", cwd=tmp_path)


# --- `set -x` replayed after the file: PS4 runs commands -----------------------------------

_TRACED = "PS4='+$(echo t >> side)'\nset -x\n"


def test_validate_runs_ps4_command_substitution_under_replayed_xtrace(tmp_path: Path) -> None:
    """HIGH. SOURCE-1: validate runs no command substitution but dirname, basename, cd,
    pwd, realpath, readlink, echo, printf.

    Observed: `PS4='+$(echo t >> side)'` and `set -x` at a library's top level: the guard
    replays `set -x` after the file (outside its trap), and every command flowsh's own
    bash runs after that expands PS4: `flowsh validate` appends ~700 lines to `side`.
    Expected: no `side` file."""
    res = _validate(tmp_path, _TRACED)
    assert res.returncode == 0, res.stderr
    assert not (tmp_path / "side").exists(), "validate expanded the library's PS4"


@pytest.mark.parametrize("runtime", ALL, indirect=True)
def test_replayed_xtrace_traces_flowsh_itself(runtime: str, tmp_path: Path) -> None:
    """HIGH. SOURCE-1 (a library's `set` applies to its functions, as with `source`).

    Observed: `set -x` (with a PS4 running a command) turns tracing on inside flowsh's
    own evaluation and step prelude, so PS4's command runs hundreds of times per step, a
    different number on each runtime, and flowsh's internals are traced into the step's
    log. Expected: as `bash -c '. lib.sh; f a'`: one trace per command of the step
    (`f a`, `echo ...`), so `side` has 2 lines per step, 4 in all."""
    res, files = _run(_two_steps(_TRACED), runtime, tmp_path, ("calls", "side"))
    assert res.exit == 0, res.stderr
    assert files["calls"] == "a\nb\n"
    assert files["side"] == "t\n" * 4, f"PS4 ran {(files['side'] or '').count('t')} times"


# --- a file the library sources itself is not pre-scanned -----------------------------------

_NESTED = {"lib.sh": "f() { echo \"$1\" >> calls; }\n"
                     ". \"$(dirname \"${BASH_SOURCE[0]}\")/inner.sh\"\n",
           "inner.sh": "g() { :; }\n{ g; } > side\n"}


def test_validate_nested_library_compound_redirection(tmp_path: Path) -> None:
    """HIGH (the fixer's known gap). SOURCE-1: a redirection on a top-level compound
    command is refused, FILE:LINE, before anything runs; validate runs nothing.

    Observed: the pre-scan (`__flowsh_scan`) reads only the files named in `source:`; a
    file they source (`. "$DIR/inner.sh"`) is read by bash's `source` under the trap
    only, so `{ g; } > side` in it creates `side` at validate. Expected: refused
    (exit 2, inner.sh:2), no `side`."""
    for rel, text in _NESTED.items():
        (tmp_path / rel).write_text(text)
    (tmp_path / "flow.yaml").write_text("source: lib.sh\nsteps:\n  - {name: a, run: f}\n")
    res = _flowsh("validate", "flow.yaml", cwd=tmp_path)
    assert not (tmp_path / "side").exists(), "validate ran a nested file's redirection"
    assert res.returncode == 2 and "inner.sh:2" in res.stderr, res.stderr


@pytest.mark.parametrize("runtime", ALL, indirect=True)
def test_nested_library_compound_redirection_in_every_step(runtime: str,
                                                          tmp_path: Path) -> None:
    """HIGH. SOURCE-1, as above, on every runtime: the nested file's `{ g; } >
    side` is performed at evaluation and in every step. Expected: refused before
    any step (exit 2), `side` never written."""
    case = _case({"source": "lib.sh", "steps": [{"name": "a", "run": "f a"},
                                                {"name": "b", "run": "f b"}]}, _NESTED)
    res, files = _run(case, runtime, tmp_path, ("calls", "side"))
    assert files["side"] is None, f"nested redirection ran: {files['side']!r}"
    assert res.exit == 2, res.stderr


# --- the scan's FILE:LINE is found by matching text ----------------------------------------

def test_scan_line_points_at_the_top_level_redirection(tmp_path: Path) -> None:
    """LOW (the fixer's known gap). SOURCE-1: a refusal names FILE:LINE of the
    offending command.

    Observed: `__flowsh_scan` finds the redirection with bash's parser (which keeps no
    line numbers) and then its line by matching text: a function body with the same text
    earlier (`g() { { :; } > "$LOG"; }`) gets the blame: lib.sh:3 instead of lib.sh:6.
    Expected: lib.sh:6 (the file starts with `f() { :; }`)."""
    res = _validate(tmp_path, 'g() {\n  { :; } > "$LOG"\n}\n\n{ g; } > "$LOG"\n')
    assert res.returncode == 2, res.stderr
    assert "lib.sh:6:" in res.stderr, res.stderr


# --- `--inline`: a library's DIR computed with `pwd -P` under a symlinked state dir ----------

def test_inline_dir_variable_resolved_through_a_symlinked_home(tmp_path: Path) -> None:
    """MEDIUM. SOURCE-4: a library variable holding a path into an embedded copy's
    directory reaches the step as the path where the library lived at export, as under
    `flowsh run`.

    Observed: the `--inline` script maps only values starting with the copy's directory
    as written (`$FLOWSH_HOME/exported/.../files/root`); with FLOWSH_HOME (or HOME) behind
    a symlink, `DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)` is the resolved
    path, kept as is: the step reads `$DIR/data.txt` in the copy's directory, where it
    is not, and fails (`flowsh run` prints "hello"). Expected: `out` is "hello"."""
    work = tmp_path / "w"
    work.mkdir()
    (tmp_path / "real").mkdir()
    (tmp_path / "home").symlink_to(tmp_path / "real")
    (work / "lib.sh").write_text('DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)\n'
                                 'f() { cat "$DIR/data.txt" > out; }\n')
    (work / "data.txt").write_text("hello\n")
    (work / "flow.yaml").write_text("source: lib.sh\nsteps:\n  - {name: a, run: f}\n")
    exp = _flowsh("export", "--bash", "--inline", "flow.yaml", "-o", "flow.sh", cwd=work)
    assert exp.returncode == 0, exp.stderr
    res = subprocess.run(["bash", "flow.sh"], cwd=work, capture_output=True, text=True,
                         timeout=60, check=False,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                              "FLOWSH_HOME": str(tmp_path / "home")})
    assert res.returncode == 0, res.stderr
    assert (work / "out").read_text() == "hello\n"


def test_replayed_verbose_prints_flowsh_prelude_into_the_step_log(tmp_path: Path) -> None:
    """LOW. SOURCE-1 (a library's `set` applies as after a plain `source`).

    Observed: `set -v` at a library's top level is replayed inside the step's prelude, so
    bash echoes flowsh's own remaining prelude lines (`unset -f __flowsh_...`, `set -eo
    pipefail`, ...) into the step's log, text that differs per runtime. Expected: as
    `bash -c $'. lib.sh\\nf a'`: the step's own text only ("f a")."""
    (tmp_path / "lib.sh").write_text('f() { echo "$1" >> calls; }\nset -v\n')
    (tmp_path / "flow.yaml").write_text("source: lib.sh\nsteps:\n  - {name: a, run: f a}\n")
    res = _flowsh("run", "flow.yaml", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    logs = list((tmp_path / ".home").glob("runs/*/a.log"))
    assert len(logs) == 1
    assert logs[0].read_text() == "f a\n"


def test_unset_of_the_source_wrappers_skips_the_nested_scan(tmp_path: Path) -> None:
    """LOW (needs intent). SOURCE-1: a redirection on a top-level compound command of a
    file the library sources is refused before anything runs.

    Observed (after fix 2): `unset -f . source` at the library's top level removes the
    guard's wrappers, so the nested file is sourced unscanned again and `{ g; } > side`
    is performed at validate. Expected: refused (exit 2, lib.sh:2), no `side`."""
    (tmp_path / "lib.sh").write_text("f() { :; }\nunset -f . source\n"
                                     ". \"$(dirname \"${BASH_SOURCE[0]}\")/inner.sh\"\n")
    (tmp_path / "inner.sh").write_text("g() { :; }\n{ g; } > side\n")
    (tmp_path / "flow.yaml").write_text("source: lib.sh\nsteps:\n  - {name: a, run: f}\n")
    res = _flowsh("validate", "flow.yaml", cwd=tmp_path)
    assert not (tmp_path / "side").exists(), "validate ran a nested file's redirection"
    assert res.returncode == 2 and "lib.sh:2" in res.stderr, res.stderr
