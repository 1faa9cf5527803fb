"""flowsh.bashlib: sourcing a script for its definitions only, in a real bash."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from flowsh.bashlib import (
    STATE_EVAL,
    check_functions,
    first_word,
    library_state_script,
    probe_names,
    source_script,
)
from flowsh.errors import WorkflowError
from flowsh.loader import load_workflow, positions_of

SCRIPT = """\
set -euo pipefail
DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
COUNT=1
touch ran-at-top-level
greet() { echo "hello $COUNT from $DIR"; }
main() { echo MAIN-RAN; }
main "$@"
"""


def bash(script: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "--noprofile", "--norc", "-c", script], cwd=cwd, text=True,
                          capture_output=True, env={"PATH": "/usr/bin:/bin", **(env or {})},
                          check=False, timeout=30)


def test_definitions_sourced_main_not_run(tmp_path: Path) -> None:
    (tmp_path / "lib.sh").write_text(SCRIPT)
    res = bash(source_script([str(tmp_path / "lib.sh")]) + "greet\n", tmp_path)
    assert res.stdout == f"hello 1 from {tmp_path}\n", res.stderr
    assert "MAIN-RAN" not in res.stdout
    assert not (tmp_path / "ran-at-top-level").exists()


def test_set_options_apply_after_sourcing(tmp_path: Path) -> None:
    (tmp_path / "lib.sh").write_text(SCRIPT)
    res = bash(source_script([str(tmp_path / "lib.sh")]) + 'echo "$-"; false; echo not-here\n',
               tmp_path)
    assert "e" in res.stdout.splitlines()[0] and "not-here" not in res.stdout


def test_guard_leaves_no_helpers_behind(tmp_path: Path) -> None:
    (tmp_path / "lib.sh").write_text("f() { :; }\n")
    res = bash(source_script([str(tmp_path / "lib.sh")]) + "declare -F; compgen -v __flowsh_ || true\n",
               tmp_path)
    assert res.stdout == "declare -f f\n"


def test_library_state_once_then_definitions_only(tmp_path: Path) -> None:
    (tmp_path / "lib.sh").write_text('STAMP=$(date +%s%N)\nAPI_TOKEN=abcd1234\nshow() { echo "$STAMP"; }\n')
    files = [str(tmp_path / "lib.sh")]
    res = subprocess.run(["bash", "--noprofile", "--norc", "-c", library_state_script(files)],
                         cwd=tmp_path, capture_output=True, env={"PATH": "/usr/bin:/bin"},
                         check=True)
    text, _, pairs = res.stdout.partition(b"\0")
    values = pairs.split(b"\0")
    assert b"STAMP" in values and b"API_TOKEN" in values and b"abcd1234" in values
    state = text.decode()
    step = STATE_EVAL + "\n" + source_script(files, definitions_only=True) + "show\n"
    outs = {bash(step, tmp_path, {"FLOWSH_LIBRARY_STATE": state}).stdout for _ in range(2)}
    assert len(outs) == 1  # every step sees the one recorded value
    stamp = [v for v in values if v.isdigit()]
    assert outs == {stamp[0].decode() + "\n"}


def test_missing_file_ends_the_step(tmp_path: Path) -> None:
    res = bash(source_script([str(tmp_path / "nope.sh")]) + "echo after\n", tmp_path)
    assert res.returncode != 0 and "nope.sh" in res.stderr


@pytest.mark.parametrize(("run", "word"), [
    ("greet a b", "greet"), ("  # c\nX=1 Y=2 load_data --x", "load_data"), ("if true; then :; fi", None),
    ("'quoted name'", None), ("echo 'unterminated", None), ("", None), ("step;", "step"),
])
def test_first_word(run: str, word: str | None) -> None:
    assert first_word(run) == word


def test_probe_names(tmp_path: Path) -> None:
    (tmp_path / "lib.sh").write_text(SCRIPT)
    kinds = probe_names([str(tmp_path / "lib.sh")], ["greet", "echo", "if", "ls", "nosuch"], tmp_path)
    assert kinds == {"greet": "function", "echo": "builtin", "if": "keyword", "ls": "file",
                     "nosuch": ""}
    (tmp_path / "bad.sh").write_text("f() {\n")
    with pytest.raises(WorkflowError, match="cannot source"):
        probe_names([str(tmp_path / "bad.sh")], ["f"], tmp_path)


def test_check_functions_names_the_step(write_flow: Callable[..., Path], tmp_path: Path) -> None:
    (tmp_path / "lib.sh").write_text(SCRIPT)
    wf = load_workflow(write_flow("name: w\nsource: [lib.sh]\nsteps:\n  - {name: ok, run: greet}\n"
                                  "  - {name: bad, run: greeet}\n  - {name: sys, run: ls}\n"))
    errors = check_functions(wf, lambda: positions_of(wf))
    assert len(errors) == 1
    assert "greeet" in str(errors[0]) and str(errors[0]).startswith(f"{wf.path}:5")


def _state(tmp_path: Path, lib: str, env: dict[str, str] | None = None,
           ) -> subprocess.CompletedProcess[str]:
    (tmp_path / "lib.sh").write_text(lib)
    return bash(library_state_script(["lib.sh"]), tmp_path, env)


def test_top_level_if_tests_run_other_commands_do_not(tmp_path: Path) -> None:
    # A test without side effects decides the branch; a skipped `usage` in a branch is fine.
    res = _state(tmp_path, 'if [ "$T" = prod ]; then DB=p; else DB=t; fi\n'
                           "if [ 1 = 1 ]; then usage; fi\n"
                           "if true && command -v ls >/dev/null 2>&1; then OK=1; fi\n", {"T": "dev"})
    assert res.returncode == 0, res.stderr
    text = res.stdout.partition("\0")[0]
    assert 'DB="t"' in text and 'OK="1"' in text
    assert "/ls" not in text  # what `command -v` prints is no state


def test_top_level_if_testing_with_a_command_is_refused(tmp_path: Path) -> None:
    res = _state(tmp_path, "f() { :; }\nif touch made; then X=1; fi\n")
    assert res.returncode == 2
    assert "lib.sh:2: the test of a top-level `if` runs a command (`touch made`)" in res.stderr
    assert not (tmp_path / "made").exists()


def test_readonly_is_kept_as_a_value_not_an_attribute(tmp_path: Path) -> None:
    res = _state(tmp_path, "readonly R=lib\ndeclare -ar A=(x)\n")
    assert res.returncode == 0, res.stderr
    text = res.stdout.partition("\0")[0]
    assert 'declare -- R="lib"' in text and 'declare -a A=([0]="x")' in text


def test_probe_runs_only_harmless_command_substitutions(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "inner.sh").write_text("inner() { :; }\n")
    (tmp_path / "lib.sh").write_text('D=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)\n'
                                     'X=$(touch made)\n. "$D/in/inner.sh"\n')
    assert probe_names(["lib.sh"], ["inner"], tmp_path) == {"inner": "function"}
    assert not (tmp_path / "made").exists()
