"""env_file grammar (shared rule 5): a subset of shell. Where the grammar and bash both
accept a file, bash itself is the oracle; refusals are FILE:LINE with exit 2 before
anything runs."""

from __future__ import annotations

import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from flowsh.envfile import read_env_file
from flowsh.errors import WorkflowError

Cli = Callable[..., CompletedProcess[str]]

# Files that are valid shell meaning the same thing: bash must read them identically.
SHELL_CASES = [
    "A=value # a comment\n",
    'INNER="say \\"hi\\""\n',
    "export B='single $HOME `x` \\\\ stays'\n",
    "C='x'\"y\"z\n",
    'D="a\\\\b \\$c \\`d\\` \\q"\n',
    'E="two\nlines"\n',
    "F='two\nlines'\n",
    'G="con\\\ntinued"\n',
    "H=5$\n",
    "I=a#b\n",
    "  # indented comment\n\nJ=\n",
    "K=tail\\\nnext\n",
    "L=a\\ b\n",
    "M=\"$\"\n",
    "N=x\r\n",
    "O=caf\xe9\n",
    "P=1\nP=2\n",
    "Q=last-line-without-newline",
]


def bash_reads(path: Path) -> dict[str, str]:
    script = (f'set -a; . "$1"; for n in {" ".join(_names(path))}; do '
              'printf "%s\\0%s\\0" "$n" "${!n}"; done')
    out = subprocess.run(["env", "-i", "bash", "--norc", "-c", script, "x", str(path)],
                         capture_output=True, check=True).stdout
    parts = out.split(b"\0")[:-1]
    return {parts[i].decode(): parts[i + 1].decode("utf-8", "surrogateescape")
            for i in range(0, len(parts), 2)}


def _names(path: Path) -> list[str]:
    return sorted(read_env_file(path))


@pytest.mark.parametrize("text", SHELL_CASES)
def test_env_file_values_are_what_bash_reads(tmp_path: Path, text: str) -> None:
    path = tmp_path / "vars.env"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    assert read_env_file(path) == bash_reads(path)


def test_env_file_unquoted_values_drop_trailing_blanks(tmp_path: Path) -> None:
    path = tmp_path / "vars.env"
    path.write_text("A=word   \nB=x\t# c\nC='q  ' # c\n")
    assert read_env_file(path) == {"A": "word", "B": "x", "C": "q  "}


@pytest.mark.parametrize(("text", "line", "message"), [
    ("A=1\nB=$HOME\n", 2, "B: expansion $H... is not allowed"),
    ("A=${X}\n", 1, "A: expansion ${..."),
    ('A="$(date)"\n', 1, "A: expansion $(..."),
    ("A=`date`\n", 1, "A: command substitution (`)"),
    ("A='open\nB=2\n", 1, "A: unterminated ' quote"),
    ('\nA="open\n', 2, 'A: unterminated " quote'),
    ("just words\n", 1, "not an assignment"),
    ("A = 1\n", 1, "not an assignment"),
    ("1A=x\n", 1, "invalid name '1A'"),
    ("A-B=x\n", 1, "invalid name 'A-B'"),
    ("A=1\nB=two  words\n", 2, "B: a blank inside an unquoted value"),  # ENVFILE-2
])
def test_env_file_refusals_name_file_and_line(tmp_path: Path, text: str, line: int,
                                              message: str) -> None:
    path = tmp_path / "vars.env"
    path.write_text(text)
    with pytest.raises(WorkflowError) as err:
        read_env_file(path)
    assert str(err.value).startswith(f"{path}:{line}: ")
    assert message in str(err.value)


def test_run_refuses_a_bad_env_file_before_anything_runs(tmp_path: Path, cli: Cli) -> None:
    (tmp_path / "vars.env").write_text("OK=1\nDEST=$HOME/backups\n")
    wf = tmp_path / "flow.yaml"
    wf.write_text(textwrap.dedent("""
        env_file: vars.env
        steps:
          - name: a
            run: touch ran
        """))
    for args in (["run", str(wf)], ["validate", str(wf)]):
        res = cli(*args)
        assert res.returncode == 2
        assert f"{tmp_path / 'vars.env'}:2: DEST: expansion $H..." in res.stderr
        assert "Traceback" not in res.stderr
    assert not (tmp_path / "ran").exists()


def test_env_file_values_reach_steps_byte_for_byte(tmp_path: Path, cli: Cli) -> None:
    (tmp_path / "vars.env").write_bytes(
        b'INNER="say \\"hi\\""\nX=value # c\nR=cr\r\nB=\xff\n')
    wf = tmp_path / "flow.yaml"
    wf.write_text(textwrap.dedent("""
        env_file: vars.env
        steps:
          - name: a
            run: printf '%s|%s|%s|%s' "$INNER" "$X" "$R" "$B" > out
        """))
    res = cli("run", str(wf))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out").read_bytes() == b'say "hi"|value|cr\r|\xff'
