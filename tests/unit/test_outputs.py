"""flowsh.outputs: the $FLOWSH_OUTPUT grammar, as a real bash step writes it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from flowsh.outputs import OutputError, parse_outputs, read_outputs, refused_name


def _bash_writes(tmp_path: Path, script: str) -> Path:
    out = tmp_path / "out"
    subprocess.run(["bash", "-c", script], env={"FLOWSH_OUTPUT": str(out), "PATH": "/usr/bin:/bin"},
                   check=True)
    return out


def test_simple_lines(tmp_path: Path) -> None:
    out = _bash_writes(tmp_path, 'echo A=1 >> "$FLOWSH_OUTPUT"; echo "B=x=y z" >> "$FLOWSH_OUTPUT"; '
                                 'echo "C=" >> "$FLOWSH_OUTPUT"; echo A=2 >> "$FLOWSH_OUTPUT"')
    assert read_outputs(out) == {"A": "2", "B": "x=y z", "C": ""}


def test_heredoc_block(tmp_path: Path) -> None:
    out = _bash_writes(tmp_path, '{ echo "REPORT<<EOF"; printf "l1\\nK=v\\n\\nl3\\n"; echo EOF; '
                                 'echo AFTER=1; } >> "$FLOWSH_OUTPUT"')
    assert read_outputs(out) == {"REPORT": "l1\nK=v\n\nl3", "AFTER": "1"}


def test_empty_block_and_blank_lines() -> None:
    assert parse_outputs(b"\n  \nE<<X\nX\n\n") == {"E": ""}


def test_carriage_return_is_part_of_the_value() -> None:
    assert parse_outputs(b"A=x\rPATH=/y\n") == {"A": "x\rPATH=/y"}


def test_non_utf8_bytes_kept() -> None:
    got = parse_outputs(b"A=\xff\xfe\n")
    assert got["A"].encode("utf-8", "surrogateescape") == b"\xff\xfe"


def test_no_file_no_outputs(tmp_path: Path) -> None:
    assert read_outputs(tmp_path / "missing") == {}


@pytest.mark.parametrize(("data", "message"), [
    (b"A=1\nnot an output\n", "line 2: 'not an output' is neither NAME=value"),
    (b"A=1\n\n1BAD=x\n", "line 3: output name '1BAD' is not an identifier"),
    (b"PATH=/tmp\n", "line 1: output PATH is refused"),
    (b"X=1\nLD_PRELOAD=/x.so\n", "line 2: output LD_PRELOAD is refused"),
    (b"flowsh_x=1\n", "output flowsh_x is refused"),
    (b"A=1\nB<<\n", "line 2: output B: '<<' without a delimiter"),
    (b"A=1\nB<<EOF\nno end\n", "line 2: output B: no line 'EOF' ends the block"),
    (b"A=1\nB=x\x00y\n", "line 2: a NUL byte"),
    (b"A B=1\n", "line 1: output name 'A B' is not an identifier"),
])
def test_errors_name_the_line(data: bytes, message: str) -> None:
    with pytest.raises(OutputError) as exc:
        parse_outputs(data)
    assert message in str(exc.value)


def test_refused_names() -> None:
    for name in ["PATH", "HOME", "IFS", "BASH_ENV", "LD_LIBRARY_PATH", "BASH_FUNC_x%%", "FLOWSH_RUN_ID"]:
        assert refused_name(name), name
    for name in ["RESULT", "path", "MY_PATH", "LDX"]:
        assert not refused_name(name), name
