"""The source guard: a user's script sourced for its definitions only, by real bash."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from flowsh.bashlib import check_functions, first_word, source_script
from flowsh.errors import WorkflowError
from flowsh.loader import load_workflow, positions_of


def _check(wf_file: Path) -> list[WorkflowError]:
    wf = load_workflow(wf_file)
    return check_functions(wf, lambda: positions_of(wf))


def run_bash(tmp_path: Path, files: list[str], then: str, *, strict: bool = False
             ) -> subprocess.CompletedProcess[str]:
    script = ("set -eo pipefail\n" if strict else "") + source_script(files) + then
    return subprocess.run(["bash", "--noprofile", "--norc", "-c", script], cwd=tmp_path,
                          capture_output=True, text=True, timeout=30)


def lib(tmp_path: Path, body: str, name: str = "lib.sh") -> str:
    (tmp_path / name).write_text(textwrap.dedent(body))
    return name


def test_trailing_call_does_not_fire_but_functions_and_settings_exist(tmp_path: Path) -> None:
    f = lib(tmp_path, """\
        #!/bin/bash
        DATA_DIR="${DATA_DIR:-$PWD/data dir}"
        HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
        declare -A workflow=( [start]=greet [greet]=end )
        greet() { echo "hello $1 from $DATA_DIR in $HERE (${workflow[start]})"; }
        echo "top-level echo ran"
        touch should-not-exist
        greet "trailing call"
        """)
    r = run_bash(tmp_path, [f], 'greet "a b"\n')
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"hello a b from {tmp_path}/data dir in {tmp_path} (greet)\n"
    assert not (tmp_path / "should-not-exist").exists()


def test_prefixed_command_is_not_mistaken_for_an_assignment(tmp_path: Path) -> None:
    f = lib(tmp_path, """\
        LC_ALL=C touch one
        X='a b' touch two
        Y="$(echo "q r")" touch three
        A="x y" B=$((1 + 2)) C=`echo z` D=${E:-"f g"}
        """)
    r = run_bash(tmp_path, [f], 'echo "$A|$B|$C|$D"\n')
    assert r.stdout == "x y|3|z|f g\n", r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lib.sh"]


def test_set_e_in_the_file_applies_to_its_functions(tmp_path: Path) -> None:
    f = lib(tmp_path, """\
        set -euo pipefail
        false
        fails() { false; echo "not reached"; }
        """)
    r = run_bash(tmp_path, [f], "fails\necho after\n")
    assert r.returncode == 1
    assert r.stdout == ""


def test_without_set_e_a_failing_command_continues(tmp_path: Path) -> None:
    f = lib(tmp_path, "soft() { false; echo went-on; }\n")
    r = run_bash(tmp_path, [f], "soft\n")
    assert (r.returncode, r.stdout) == (0, "went-on\n")


def test_strict_mode_survives_the_guard(tmp_path: Path) -> None:
    # Skipped commands and the guard's own tests must not trip `set -e` while reading.
    f = lib(tmp_path, "false\n[ -n '' ]\nok() { echo ok; }\n")
    r = run_bash(tmp_path, [f], "ok\nfalse\necho not-reached\n", strict=True)
    assert (r.returncode, r.stdout) == (1, "ok\n")


def test_nested_source_is_guarded_too(tmp_path: Path) -> None:
    lib(tmp_path, "inner() { echo inner; }\ntouch inner-ran\n", name="inner.sh")
    f = lib(tmp_path, 'source "$(dirname "${BASH_SOURCE[0]}")/inner.sh"\nouter() { inner; }\n'
                      "touch outer-ran\n")
    r = run_bash(tmp_path, [f], "outer\n")
    assert r.stdout == "inner\n", r.stderr
    assert not (tmp_path / "inner-ran").exists()
    assert not (tmp_path / "outer-ran").exists()


def test_top_level_loop_stops_reading_instead_of_spinning(tmp_path: Path) -> None:
    f = lib(tmp_path, """\
        before() { echo before; }
        while read -r line; do echo "$line"; done
        after() { echo after; }
        """)
    r = run_bash(tmp_path, [f], "before\ntype -t after || echo no-after\n")
    assert r.stdout == "before\nno-after\n"
    assert "lib.sh:2: a top-level loop" in r.stderr


def test_syntax_error_and_missing_file_fail_the_step(tmp_path: Path) -> None:
    f = lib(tmp_path, "broken() {\n")
    r = run_bash(tmp_path, [f], "echo reached\n")
    assert r.returncode == 2
    assert "syntax error" in r.stderr
    assert "reached" not in r.stdout
    r = run_bash(tmp_path, ["missing.sh"], "echo reached\n")
    assert r.returncode == 2
    assert "cannot read missing.sh" in r.stderr


def test_guard_leaves_no_traces(tmp_path: Path) -> None:
    f = lib(tmp_path, "f() { :; }\n")
    r = run_bash(tmp_path, [f, f], "declare -F; trap -p DEBUG; shopt -q extdebug || echo off\n"
                                   "compgen -v __flowsh || echo no-vars\n")
    assert r.stdout == "declare -f f\noff\nno-vars\n", r.stderr


def test_path_with_spaces_and_quotes(tmp_path: Path) -> None:
    d = tmp_path / "my 'lib' dir"
    d.mkdir()
    (d / 'it"s.sh').write_text("hi() { echo hi; }\n")
    r = run_bash(tmp_path, ["my 'lib' dir/it\"s.sh"], "hi\n")
    assert r.stdout == "hi\n", r.stderr


@pytest.mark.parametrize(
    ("run", "word"),
    [
        ('extract_data "$day"', "extract_data"),
        ("  # comment\n\nFOO=1 load --all", "load"),
        ("./script.sh", None),
        ("if true; then x; fi", None),
        ("echo 'unclosed", None),
        ("a_b::c-d x", "a_b::c-d"),
    ],
)
def test_first_word(run: str, word: str | None) -> None:
    assert first_word(run) == word


def test_check_functions_reports_missing_function_with_file_step_and_line(
    tmp_path: Path,
) -> None:
    lib(tmp_path, "extract_data() { :; }\nmain() { :; }\nmain \"$@\"\n")
    wf_file = tmp_path / "flow.yaml"
    wf_file.write_text(textwrap.dedent("""\
        source: lib.sh
        steps:
          - name: extract
            run: extract_data "$day"
          - name: load
            run: load_data --fast
          - name: list
            run: ls -l
          - name: shell
            run: cd /tmp && pwd
        """))
    errors = _check(wf_file)
    assert [str(e) for e in errors] == [
        f"{wf_file}:6:10: step 'load' calls 'load_data', which is not a function in lib.sh "
        "(nor a builtin or a command on PATH)"
    ]


def test_check_functions_per_step_source_and_clean_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A function exported into flowsh's own environment must not count: bash runs clean.
    lib(tmp_path, "only_here() { :; }\n", name="a.sh")
    monkeypatch.setenv("BASH_FUNC_leaked%%", "() { :; }")
    wf_file = tmp_path / "flow.yaml"
    wf_file.write_text(textwrap.dedent("""\
        steps:
          - name: one
            source: a.sh
            run: only_here
          - name: two
            source: a.sh
            run: leaked
          - name: three
            run: leaked
        """))
    errors = _check(wf_file)
    assert len(errors) == 1
    assert "step 'two' calls 'leaked'" in str(errors[0])


def test_check_functions_reports_a_source_with_a_syntax_error(tmp_path: Path) -> None:
    lib(tmp_path, "broken() {\n", name="broken.sh")
    wf_file = tmp_path / "flow.yaml"
    wf_file.write_text("source: broken.sh\nsteps:\n  - {name: s, run: something}\n")
    errors = _check(wf_file)
    assert len(errors) == 1
    assert "cannot source broken.sh" in str(errors[0])
    assert "syntax error" in str(errors[0])
    assert str(errors[0]).startswith(f"{wf_file}:1:9:")
