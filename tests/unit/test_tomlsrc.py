"""flowsh.tomlsrc: TOML nested deeper than 100 levels is refused (FILE-8) at the line and
column of the collection 100 levels down, however the nesting is written; 99 is data."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flowsh.errors import WorkflowError
from flowsh.tomlsrc import parse_toml

PATH = Path("f.toml")
STEP = "[[steps]]\nname = 's'\nrun = 'true'\n"


def _keys(n: int) -> str:
    return ".".join(f"k{i}" for i in range(n))


def _col(line: str, needle: str, nth: int) -> int:
    """1-based column of the `nth` (1-based) occurrence of `needle` in `line`."""
    return [m.start() for m in re.finditer(re.escape(needle), line)][nth - 1] + 1


# (text, line, column) of the collection at depth 100: the root is 0, a key's list 1.
# Under [[steps]] a key's value is at 3 (the array of tables 1, its table 2).
TOO_DEEP = [
    ("x = " + "[" * 100 + "]" * 100 + "\n", 1, 4 + 100),
    ("x = " + "[" * 5000 + "]" * 5000 + "\n", 1, 4 + 100),  # tomllib: RecursionError
    ("x = " + "{a = " * 100 + "1" + "}" * 100 + "\n", 1, 5 + 5 * 99),
    ("x = [" + "{a = [" * 50 + "]}" * 50 + "]\n", 1, 6 + 6 * 49),
    (_keys(100) + " = []\n", 1, len(_keys(100)) + 4),
    (_keys(101) + " = 1\n", 1, _col(_keys(101), "k99", 1)),
    (_keys(5000) + " = 1\n", 1, _col(_keys(5000), "k99", 1)),
    ("[" + _keys(100) + "]\n", 1, _col(_keys(100), "k99", 1) + 1),
    ("[t]\n" + _keys(99) + " = []\n", 2, len(_keys(99)) + 4),
    (STEP + "x = " + "[" * 98 + "]" * 98 + "\n", 4, 4 + 98),
    ("".join(f"[[{'.'.join(['a'] * (i + 1))}]]\n" for i in range(50)), 50, 1),
    (STEP + "a = '''[[[{{\n]]]'''\nb = \"[\\\"[\" # [[[\nc = [ # [[[\n  "
     + "[" * 97 + "]" * 97 + "]\n", 8, 2 + 97),
    ("x = {" + "'a.b'.\"c\" = {" * 50 + "}" * 51 + "\n", 1,
     _col("x = {" + "'a.b'.\"c\" = {" * 50, "'a.b'", 50)),
]
ALLOWED = [
    "x = " + "[" * 99 + "]" * 99 + "\n",
    _keys(100) + " = 1\n",  # dicts at 1..99, the value 1
    _keys(99) + " = []\n",
    "[" + _keys(99) + "]\n",
    STEP + "x = " + "[" * 97 + "]" * 97 + "\n",
    "x = '" + "[" * 500 + "'\n",
    # a line of many dots sends the file to the scanner first (tomlsrc._may_hold_a_long_key);
    # in a string it is data
    "x = '" + "a." * 500 + "'\n",
    'x = """\n' + "a . " * 500 + '\n"""\n',
    "# " + "k." * 500 + "\n" + _keys(99) + " = []\n",
]


@pytest.mark.parametrize(("text", "line", "col"), TOO_DEEP)
def test_nesting_deeper_than_100_levels_is_refused_where_it_reaches_100(
        text: str, line: int, col: int) -> None:
    with pytest.raises(WorkflowError) as caught:
        parse_toml(text, PATH)
    assert str(caught.value) == f"f.toml:{line}:{col}: mappings and lists nest deeper than 100 levels"


@pytest.mark.parametrize("text", ALLOWED)
def test_99_levels_are_data(text: str) -> None:
    assert isinstance(parse_toml(text, PATH), dict)


def test_malformed_toml_is_still_malformed() -> None:
    with pytest.raises(WorkflowError, match=r"^f\.toml: malformed TOML: "):
        parse_toml("x = [\n", PATH)
