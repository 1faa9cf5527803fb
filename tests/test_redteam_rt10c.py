"""Red team rt10c (issue 10, third pass): the same workflow file must mean the same on
`flowsh run`, `flowsh validate`, the exported script (`--inline` too) and the Celery
executor (docs/semantics.md). Each test is a reproducer that failed on integ (ebe2b0c)
when written, run through the conformance harness on every runtime or with `flowsh
validate`; findings are listed in /work/wt/rt10c-findings.md."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests import redteam_kit as kit
from tests.conformance import harness
from tests.redteam_kit import ALL
from tests.redteam_kit import run_case as _run
from tests.redteam_kit import validate as _validate

# Not the conformance suite's db 6 (its session fixture flushes it), rt10's 11, rt10b's 12.
REDIS = os.environ.get("FLOWSH_RT10C_REDIS", "redis://127.0.0.1:6379/13")

# Findings still open (rt10c-findings.md lists them): strict xfails, so that a fix shows as
# an unexpected pass to be removed from here.
OPEN: frozenset[str] = frozenset()
_open_findings = kit.open_findings("rt10c", OPEN)
celery_worker, runtime = kit.celery_runtime("rt10c", REDIS)
_case = kit.case_maker("rt10c")


def _flowsh(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return kit.flowsh(*args, cwd=cwd, home=cwd / ".home")


def _two_steps(lib: str) -> harness.Case:
    return kit.two_steps("rt10c", lib)


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
