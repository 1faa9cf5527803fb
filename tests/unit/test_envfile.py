"""flowsh.envfile: the env_file grammar, checked against what bash itself reads."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowsh.envfile import parse_env_text, read_env_file
from flowsh.errors import WorkflowError


def _bash_reads(path: Path, names: list[str]) -> dict[str, str]:
    """Source the file in a clean bash, print each name's value NUL-separated."""
    script = 'set -a; . "$1"; for n in ' + " ".join(names) + '; do printf "%s=%s\\0" "$n" "${!n}"; done'
    out = subprocess.run(["bash", "-c", script, "bash", str(path)], capture_output=True,
                         env={"PATH": "/usr/bin:/bin"}, check=True).stdout
    pairs = out.decode("utf-8", "surrogateescape").split("\0")[:-1]
    return dict(p.split("=", 1) for p in pairs)


SAMPLE = r"""# a comment
  A=plain
export B='single $HOME `x` "q"'
C="double \"q\" \$ \\ \n $"
D=a\ b
E=value   # trailing comment
F=
G='multi
line'
H="joined \
on"
I=5$
J=x'y'"z"
"""


def test_sample_matches_bash(tmp_path: Path) -> None:
    p = tmp_path / ".env"
    p.write_text(SAMPLE)
    got = read_env_file(p)
    assert list(got) == list("ABCDEFGHIJ")
    assert got == _bash_reads(p, list(got))
    assert got["B"] == 'single $HOME `x` "q"'
    assert got["G"] == "multi\nline"
    assert got["E"] == "value"


_VALUE = st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
                 max_size=30)


@settings(max_examples=25, deadline=None)
@given(st.lists(_VALUE, min_size=1, max_size=5))
def test_single_quoted_values_match_bash(tmp_path_factory: pytest.TempPathFactory,
                                         values: list[str]) -> None:
    p = tmp_path_factory.mktemp("env") / ".env"
    text = "".join(f"V{i}='" + v.replace("'", "'\\''") + "'\n" for i, v in enumerate(values))
    p.write_bytes(text.encode("utf-8", "surrogateescape"))
    got = read_env_file(p)
    assert got == {f"V{i}": v for i, v in enumerate(values)}
    assert got == _bash_reads(p, list(got))


def test_non_utf8_bytes_kept(tmp_path: Path) -> None:
    p = tmp_path / ".env"
    p.write_bytes(b"A=\xff\xfe\n")
    assert read_env_file(p)["A"].encode("utf-8", "surrogateescape") == b"\xff\xfe"


@pytest.mark.parametrize(("text", "line", "message"), [
    ("A=1\nB=$HOME\n", 2, "expansion $H... is not allowed"),
    ("A=1\n\nB=${X}\n", 3, "expansion ${..."),
    ("A=\"$(id)\"\n", 1, "expansion $(..."),
    ("A=`id`\n", 1, "command substitution (`)"),
    ("A=1\n1B=2\n", 2, "invalid name '1B'"),
    ("echo hi\n", 1, "not an assignment"),
    ("FLOWSH_X=1\n", 1, "reserved for flowsh"),
    ("A=1\nB='open\nstill\n", 2, "unterminated ' quote"),
    ('A="open\n', 1, 'unterminated " quote'),
])
def test_refusals_name_file_and_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    p = tmp_path / ".env"
    p.write_text(text)
    with pytest.raises(WorkflowError) as exc:
        read_env_file(p)
    assert exc.value.path == str(p) and exc.value.line == line
    assert message in str(exc.value)
    assert str(exc.value).startswith(f"{p}:{line}: ")


def test_nul_byte_refused_with_line(tmp_path: Path) -> None:
    p = tmp_path / ".env"
    p.write_bytes(b"A=1\nB=x\x00y\n")
    with pytest.raises(WorkflowError, match="NUL byte") as exc:
        read_env_file(p)
    assert exc.value.line == 2


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError, match="cannot read env_file"):
        read_env_file(tmp_path / "missing")


def test_parse_env_text_without_a_file() -> None:
    assert parse_env_text("A=1\nexport  B=2", Path("x")) == {"A": "1", "B": "2"}


# --- where the grammar and bash part ways (docs/semantics.md ENVFILE-1/2/4) ----------------
# Each file below is read by bash as something else than flowsh reads it. ENVFILE-1 says
# the env_file is a subset of shell, ENVFILE-4 that expansions MUST be refused. The exported
# script's reader (templates/bash/runtime.sh.j2) is written as the same state machine.


def _bash_value(path: Path) -> str | None:
    res = subprocess.run(["bash", "--noprofile", "--norc", "-c",
                          'set -a; . "$1" 2>/dev/null; printf %s "${X-}"', "bash", str(path)],
                         capture_output=True, env={"PATH": "/usr/bin:/bin", "HOME": "/home/u"},
                         check=False)
    return res.stdout.decode("utf-8", "surrogateescape")


@pytest.mark.parametrize("text", ["X=pid$$\n", "X=a$#\n", "X=$?\n", "X=$-\n", "X=$!\n",
                                  "X=$@\n", "X=$*\n", 'X="$$"\n'])
def test_special_parameters_are_refused(tmp_path: Path, text: str) -> None:
    p = tmp_path / ".env"
    p.write_text(text)
    with pytest.raises(WorkflowError, match="not allowed in an env_file"):
        read_env_file(p)


@pytest.mark.parametrize("text", ["X=$\\\nHOME\n", 'X="$\\\nHOME"\n'])
def test_expansion_split_by_a_continuation_is_refused(tmp_path: Path, text: str) -> None:
    p = tmp_path / ".env"
    p.write_text(text)
    assert _bash_value(p) == "/home/u"  # what bash makes of the file
    with pytest.raises(WorkflowError, match="not allowed in an env_file"):
        read_env_file(p)


@pytest.mark.parametrize("text", ["X=~\n", "X=~/x\n", "X=a:~/x\n"])
def test_tilde_means_what_bash_means_or_is_refused(tmp_path: Path, text: str) -> None:
    p = tmp_path / ".env"
    p.write_text(text)
    try:
        got = read_env_file(p)["X"]
    except WorkflowError:
        return
    assert got == _bash_value(p)


@pytest.mark.parametrize("text", ["X=value trailing\n", "X=a\tb\n"])
def test_an_unquoted_value_ends_at_the_first_blank(tmp_path: Path, text: str) -> None:
    p = tmp_path / ".env"
    p.write_text(text)
    try:
        got = read_env_file(p)["X"]
    except WorkflowError:
        return  # refusing the rest of the line is within the rule too
    assert got == text.split("=", 1)[1].split()[0]


@pytest.mark.parametrize(("text", "want"), [
    ("X=a~b\n", "a~b"), ("X='~'/x\n", "~/x"), ("X=\\~\n", "~"), ('X="~"\n', "~"),
    ("X=\"it's $'\"\n", "it's $'"), ("X=5$\n", "5$"), ("X=a:b\n", "a:b"),
])
def test_what_a_shell_also_keeps_as_text_is_kept(tmp_path: Path, text: str, want: str) -> None:
    p = tmp_path / ".env"
    p.write_text(text)
    assert read_env_file(p)["X"] == want == _bash_value(p)


@pytest.mark.parametrize("text", ["X=$'a\\nb'\n", 'X=$"a"\n', "X=\\\n~/x\n"])
def test_ansi_c_quotes_and_a_joined_tilde_are_refused(tmp_path: Path, text: str) -> None:
    p = tmp_path / ".env"
    p.write_text(text)
    with pytest.raises(WorkflowError, match=r"not allowed in an env_file|unquoted ~"):
        read_env_file(p)
