"""Seed-style bash workflow files: parsed without running them, checked by bash."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from flowsh.errors import WorkflowError
from flowsh.loader import load_workflow
from flowsh.seed import _Text, find_entries

FUNCS = "".join(f"{n}() {{ echo {n} \"$1\"; }}\n" for n in ("a", "b", "c", "d"))


def write(tmp_path: Path, body: str, name: str = "legacy.sh") -> Path:
    p = tmp_path / name
    p.write_text("#!/bin/bash\n" + FUNCS + textwrap.dedent(body))
    return p


def names(p: Path) -> list[str]:
    return [s.name for s in load_workflow(p).steps]


def bash_view(p: Path) -> dict[str, str]:
    """What bash itself holds in `workflow` after running only the array's assignment(s)."""
    script = (
        "declare -A workflow\n"
        + "".join(line + "\n" for line in p.read_text().splitlines()
                  if not line.lstrip().startswith(("etl_workflow", "execute_workflow")))
        + "etl_workflow_def() { :; }\n"
        + 'for k in "${!workflow[@]}"; do printf "%s\\t%s\\n" "$k" "${workflow[$k]}"; done\n'
    )
    out = subprocess.run(["bash", "--noprofile", "--norc", "-c", script],
                         capture_output=True, text=True, check=True).stdout
    return dict(line.split("\t") for line in out.splitlines())


CASES = {
    "declare-then-assign": """
        declare -A workflow
        workflow=(
            ["start"]="a"
            ["a"]="b"   # a comment with ) and "quotes"
            ["b"]="end"
        )
        """,
    "one-line-declare": """declare -A workflow=( [start]=a [a]='b' ["b"]=c [c]=end )\n""",
    "quotes-and-escapes": """
        declare -A workflow
        workflow=( ["start"]=$'a' ['a']="b" [b]=\\c \\
                   [c]="end" )
        """,
    "pairs-form": """declare -A workflow=( start a  a b  b end )\n""",
    "elements": """
        declare -A workflow
        workflow["start"]="a"
        workflow[a]=d
        workflow['d']="end"
        """,
    "append": """
        declare -A workflow=( [start]=a )
        workflow+=( [a]=b [b]=end )
        """,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_array_forms_read_as_bash_reads_them(tmp_path: Path, case: str) -> None:
    p = write(tmp_path, CASES[case])
    src = _Text(p.read_text(), p)
    entries, _ = find_entries(src)
    assert {e.key: e.value for e in entries} == bash_view(p)
    wf = load_workflow(p)
    chain = ["start", *[s.name for s in wf.steps]]
    view = bash_view(p)
    assert [view[k] for k in chain] == [*chain[1:], "end"]


def test_seed_etl_function_form(tmp_path: Path) -> None:
    p = write(tmp_path, """
        declare -A workflow
        etl_workflow() {
            local workflow_id="etl_$(date +%s)"
            # Define steps
            workflow=(
                ["start"]="a"
                ["a"]="c"
                ["c"]="end"
            )
            execute_workflow "$workflow_id"
        }
        etl_workflow "$@"
        """)
    wf = load_workflow(p)
    assert [s.name for s in wf.steps] == ["a", "c"]
    assert wf.steps[1].needs == ["a"]
    assert wf.source == ["legacy.sh"]
    assert wf.strict is False
    assert wf.params == {"data": ""}
    assert wf.steps[0].run == 'a "$data"'
    assert wf.name == "legacy"


def test_loading_runs_no_top_level_code(tmp_path: Path) -> None:
    p = write(tmp_path, """
        touch loaded-marker
        declare -A workflow=( [start]=a [a]=end )
        X=$(touch subst-marker)
        a "$@"
        """)
    load_workflow(p)
    assert not (tmp_path / "loaded-marker").exists()
    # Reading a file runs none of its code (SOURCE-1, rt10): an assignment's command
    # substitution only when made of dirname, cd, pwd & co (`DIR=$(dirname ...)`).
    assert sorted(x.name for x in tmp_path.iterdir()) == ["legacy.sh"]


def err(p: Path) -> WorkflowError:
    with pytest.raises(WorkflowError) as exc:
        load_workflow(p)
    return exc.value


def line_of(p: Path, needle: str) -> int:
    for n, line in enumerate(p.read_text().splitlines(), 1):
        if needle in line:
            return n
    raise AssertionError(needle)


def test_loop_is_reported_at_the_entry(tmp_path: Path) -> None:
    p = write(tmp_path, """
        declare -A workflow=(
          [start]=a
          [a]=b
          [b]=a
        )
        """)
    e = err(p)
    assert e.line == line_of(p, "[b]=a")
    assert e.col == 3
    assert "loops: a -> b -> a" in str(e)
    assert str(e).startswith(f"{p}:{e.line}:3:")


def test_missing_end(tmp_path: Path) -> None:
    p = write(tmp_path, """
        declare -A workflow=(
          [start]=a
          [a]=b
        )
        """)
    e = err(p)
    assert e.line == line_of(p, "[a]=b")
    assert "step 'b' has no next step" in e.detail


def test_unknown_function(tmp_path: Path) -> None:
    p = write(tmp_path, """
        declare -A workflow=(
          [start]=a
          [a]=nosuchfunc
          [nosuchfunc]=end
        )
        """)
    e = err(p)
    assert e.line == line_of(p, "[a]=nosuchfunc")
    assert "'nosuchfunc' is not defined" in e.detail


def test_function_defined_after_trailing_call_is_found(tmp_path: Path) -> None:
    # Functions are defined by bash itself, wherever they are in the file.
    p = write(tmp_path, """
        declare -A workflow=( [start]=late [late]=end )
        main "$@"
        late() { echo late; }
        """)
    assert names(p) == ["late"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("echo no array here\n", "no workflow array found"),
        ("declare -A workflow=( [a]=b [b]=end )\n", 'no ["start"] entry'),
        ("declare -A workflow=( [start]=end )\n", "the workflow is empty"),
        ("declare -A workflow=( [start]=$STEP [a]=end )\n", "must be literal names"),
        ("declare -A workflow=( [start]=a [a]=end [start]=b )\n", "set twice"),
        ("workflow=( [start]=a [a]=end )\nworkflow=( [start]=b [b]=end )\n",
         "a second workflow=(...) assignment"),
        ("declare -A workflow=( [start]=a [a]=end\n", "not closed"),
        ('declare -A workflow=( [start]="a [a]=end )\n', "unterminated double quote"),
        ("declare -A workflow=( start a a )\n", "key without a value"),
    ],
)
def test_bad_chains(tmp_path: Path, body: str, message: str) -> None:
    e = err(write(tmp_path, body))
    assert message in e.detail
    assert e.line is not None


def test_syntax_error_in_file_is_reported(tmp_path: Path) -> None:
    p = write(tmp_path, "declare -A workflow=( [start]=a [a]=end )\nbroken() {\n")
    e = err(p)
    assert "cannot source legacy.sh" in e.detail
    assert "syntax error" in e.detail


def test_shebang_file_without_suffix_is_a_seed(tmp_path: Path) -> None:
    p = write(tmp_path, "declare -A workflow=( [start]=a [a]=b [b]=end )\n", name="nightly")
    assert names(p) == ["a", "b"]
