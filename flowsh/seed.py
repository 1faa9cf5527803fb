"""Seed-style bash workflow files: step functions plus ``declare -A workflow=( ... )``.

The original brief's workflows are bash files whose associative array chains step
functions: ``["start"]="extract" ["extract"]="load" ["load"]="end"``. flowsh reads such a
file *without running it*: the array is parsed here from the text (its quoting, comments
and line breaks as bash reads them), and the chain becomes plain workflow data that
`flowsh.loader` validates like a YAML file. Positions point at the array's entries, so a
broken chain is reported as FILE:LINE:COL.

When a step runs, the file is sourced under `flowsh.bashlib`'s guard (definitions only),
so its trailing ``execute_workflow`` / ``etl_workflow "$@"`` call does not fire, and the step
calls one function with the workflow's ``data`` param as ``$1``, as the seed's
``execute_workflow`` did (``$current "$data"``).
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowsh.bashlib import probe_names
from flowsh.errors import WorkflowError
from flowsh.model import STEP_NAME
from flowsh.yamlsrc import Positions

# `workflow=(`, `workflow+=(`, `declare -A workflow=(`, `local -A workflow=(` at a line start.
_ASSIGN = re.compile(
    r"^[ \t]*(?:(?:declare|typeset|local)[ \t]+(?:-[A-Za-z]+[ \t]+)*)?workflow(\+?)=\(",
    re.M,
)
# `workflow["a"]="b"`, one entry per line.
_ELEMENT = re.compile(r"^[ \t]*workflow(?=\[)", re.M)


@dataclass
class Entry:
    key: str
    value: str
    offset: int  # where the entry starts in the file text


class _Text:
    """The file text with offset -> (line, col) lookup."""

    def __init__(self, text: str, path: Path) -> None:
        self.text = text
        self.path = path
        self._starts = [0] + [m.end() for m in re.finditer(r"\n", text)]

    def where(self, offset: int) -> tuple[int, int]:
        line = bisect.bisect_right(self._starts, offset) - 1
        return line + 1, offset - self._starts[line] + 1

    def error(self, message: str, offset: int) -> WorkflowError:
        line, col = self.where(offset)
        return WorkflowError(message, path=self.path, line=line, col=col)


# A word is a list of (char, quoted) so `["start"]=` can be told from a quoted `[`.
Word = list[tuple[str, bool]]


def _read_word(src: _Text, i: int) -> tuple[Word, int, bool]:
    """One shell word starting at `i`: its characters, the end offset, and whether it holds
    an expansion (`$x`, `$(...)`, backquotes) that only running bash could resolve."""
    t = src.text
    n = len(t)
    word: Word = []
    dynamic = False
    while i < n:
        c = t[i]
        if c in " \t\n);|&<>":
            break
        if c == "\\":
            if i + 1 < n and t[i + 1] == "\n":
                i += 2  # line continuation
                continue
            if i + 1 < n:
                word.append((t[i + 1], True))
            i += 2
            continue
        if c == "'":
            end = t.find("'", i + 1)
            if end < 0:
                raise src.error("unterminated single quote", i)
            word.extend((ch, True) for ch in t[i + 1:end])
            i = end + 1
            continue
        if c == "$" and i + 1 < n and t[i + 1] == "'":
            end = i + 2
            chars: list[str] = []
            while end < n and t[end] != "'":
                if t[end] == "\\" and end + 1 < n:
                    esc = t[end + 1]
                    chars.append({"n": "\n", "t": "\t", "\\": "\\", "'": "'"}.get(esc, "\\" + esc))
                    end += 2
                    continue
                chars.append(t[end])
                end += 1
            if end >= n:
                raise src.error("unterminated $'...' quote", i)
            word.extend((ch, True) for s in chars for ch in s)
            i = end + 1
            continue
        if c == '"':
            j = i + 1
            while j < n and t[j] != '"':
                if t[j] == "\\" and j + 1 < n and t[j + 1] in '"\\$`\n':
                    if t[j + 1] != "\n":
                        word.append((t[j + 1], True))
                    j += 2
                    continue
                if t[j] in "$`":
                    dynamic = True
                word.append((t[j], True))
                j += 1
            if j >= n:
                raise src.error("unterminated double quote", i)
            i = j + 1
            continue
        if c in "$`":
            dynamic = True
        word.append((c, False))
        i += 1
    return word, i, dynamic


def _split_entry(word: Word) -> tuple[str, str] | None:
    """`[key]=value` -> (key, value); None when the word has no unquoted `[...]=` prefix."""
    if not word or word[0] != ("[", False):
        return None
    for k in range(1, len(word) - 1):
        if word[k] == ("]", False) and word[k + 1] == ("=", False):
            key = "".join(ch for ch, _ in word[1:k])
            value = "".join(ch for ch, _ in word[k + 2:])
            return key, value
    return None


def _parse_array(src: _Text, i: int) -> tuple[list[Entry], int]:
    """Entries of an array literal whose `(` is just before `i`; returns them and the end."""
    t = src.text
    n = len(t)
    keyed: list[Entry] = []
    bare: list[tuple[str, int]] = []
    while True:
        while i < n and (t[i] in " \t\n" or t.startswith("\\\n", i)):
            i += 2 if t[i] == "\\" else 1
        if i >= n:
            raise src.error("the workflow array is not closed with `)`", i - 1)
        if t[i] == ")":
            break
        if t[i] == "#":
            nl = t.find("\n", i)
            i = n if nl < 0 else nl
            continue
        start = i
        word, i, dynamic = _read_word(src, i)
        if not word:
            raise src.error(f"unexpected {t[i]!r} in the workflow array", i)
        if dynamic:
            raise src.error(
                "workflow entries must be literal names: flowsh reads the array without "
                "running the file, so `$...` cannot be resolved", start)
        pair = _split_entry(word)
        if pair is None:
            bare.append(("".join(ch for ch, _ in word), start))
        else:
            keyed.append(Entry(pair[0], pair[1], start))
    if keyed and bare:
        raise src.error("mix of [key]=value entries and bare words in the workflow array",
                        bare[0][1])
    if bare:
        # bash 5.1's `assoc=(key value key value)` form.
        if len(bare) % 2:
            raise src.error("the workflow array has a key without a value", bare[-1][1])
        keyed = [Entry(bare[k][0], bare[k + 1][0], bare[k][1]) for k in range(0, len(bare), 2)]
    return keyed, i + 1


def _is_comment_line(text: str, offset: int) -> bool:
    line_start = text.rfind("\n", 0, offset) + 1
    return text[line_start:offset].lstrip().startswith("#")


def find_entries(src: _Text) -> tuple[list[Entry], int]:
    """Every entry of the `workflow` array, in the order bash would assign them, and the
    offset of the (first) assignment. Two separate `workflow=(...)` assignments are refused:
    only running the file could tell which one is in force."""
    entries: list[Entry] = []
    first: int | None = None
    assigned: int | None = None
    for m in _ASSIGN.finditer(src.text):
        at = m.start() + len(m.group(0)) - len(m.group(0).lstrip())
        if m.group(1) != "+":
            if assigned is not None:
                line, _ = src.where(assigned)
                raise src.error(
                    f"a second workflow=(...) assignment (the first is at line {line}); "
                    "keep one", at)
            assigned = at
            entries = [e for e in entries if e.offset > at]  # `=` replaces what came before
        found, _ = _parse_array(src, m.end())
        entries.extend(found)
        first = at if first is None else min(first, at)
    for m in _ELEMENT.finditer(src.text):
        if _is_comment_line(src.text, m.start()) or (assigned is not None and m.end() < assigned):
            continue
        word, _, dynamic = _read_word(src, m.end())
        pair = _split_entry(word)
        if pair is None:
            continue
        if dynamic:
            raise src.error("workflow entries must be literal names", m.end())
        entries.append(Entry(pair[0], pair[1], m.end()))
        first = m.end() if first is None else min(first, m.end())
    entries.sort(key=lambda e: e.offset)
    if first is None:
        import shlex  # a plain script (issue 18): name the three ways in

        q = shlex.quote(str(src.path or "SCRIPT"))
        raise WorkflowError(
            'no workflow array found (declare -A workflow=( ["start"]="first_step" ... )); '
            f"for a plain bash script: `flowsh wrap -- bash {q}` runs it as is, "
            f"`flowsh init --from {q}` makes a workflow with one step per function its main "
            "calls, or a workflow file can load it with `source:` and call its functions",
            path=src.path, line=1, col=1)
    return entries, first


def chain(src: _Text, entries: list[Entry], at: int) -> list[Entry]:
    """Follow start -> ... -> end; the entry that names each step, in run order."""
    table: dict[str, Entry] = {}
    for e in entries:
        if e.key in table:
            line, _ = src.where(table[e.key].offset)
            raise src.error(f"key {e.key!r} is set twice (also at line {line})", e.offset)
        table[e.key] = e
    if "start" not in table:
        raise src.error('the workflow array has no ["start"] entry', at)
    out: list[Entry] = []
    seen: dict[str, Entry] = {}
    current = table["start"]
    if current.value == "end":
        raise src.error('the workflow is empty: ["start"] leads straight to "end"',
                        current.offset)
    while current.value != "end":
        name = current.value
        if name == "start":
            raise src.error('a step cannot be called "start"', current.offset)
        if name in seen:
            loop = [*[e.value for e in out[[e.value for e in out].index(name):]], name]
            raise src.error(f"the workflow chain loops: {' -> '.join(loop)}", current.offset)
        if not STEP_NAME.match(name):
            raise src.error(
                f"{name!r} is not a usable step name (letters, digits, '_', '.', '-')",
                current.offset)
        seen[name] = current
        out.append(current)
        if name not in table:
            raise src.error(
                f'step {name!r} has no next step: the chain must finish with ["{name}"]="end"',
                current.offset)
        current = table[name]
    return out


@dataclass
class TrailingCall:
    """The command a seed file ends with (`execute_workflow "prod"`, `main "$@"`)."""

    line: int
    function: str
    args: list[str]
    literal: bool  # every argument is a literal word (no $, no backquote)


_FUNC_DEF = re.compile(r"^[ \t]*(?:function[ \t]+)?([A-Za-z_][A-Za-z0-9_:.-]*)[ \t]*\(\)", re.M)
_CLOSERS = {"}", "fi", "done", "esac", ")", ";;"}


def trailing_call(text: str) -> TrailingCall | None:
    """The file's last top-level line, when it calls a function the file defines.

    The seed's executor took the workflow's data as `$1`: a file ending
    `execute_workflow "prod"` ran every step with data=prod. Top level means unindented
    (a seed file indents function bodies); only that last line is looked at.
    """
    import shlex

    defined = set(_FUNC_DEF.findall(text))
    lines = text.splitlines()
    for n in range(len(lines) - 1, -1, -1):
        line = lines[n]
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[:1] in (" ", "\t") or stripped in _CLOSERS:
            return None
        try:
            words = shlex.split(stripped, comments=True)
        except ValueError:
            return None
        if not words or words[0] not in defined:
            return None
        body = stripped[len(stripped.split(None, 1)[0]):]
        return TrailingCall(n + 1, words[0], words[1:], "$" not in body and "`" not in body)
    return None


def seed_data_param(text: str) -> str:
    """The `data` param's default: the literal first argument of a trailing
    `execute_workflow ARG` (the seed's executor, which passed `$1` to every step)."""
    call = trailing_call(text)
    if call and call.function == "execute_workflow" and call.literal and call.args:
        return call.args[0]
    return ""


def parse_seed(text: str, path: Path, *, check: bool = True) -> tuple[dict[str, Any], Positions]:
    """Plain workflow data and positions from a seed-style bash file.

    With `check`, bash is asked (file sourced under the guard, in a clean environment)
    whether every step function exists.
    """
    src = _Text(text, path)
    entries, at = find_entries(src)
    steps = chain(src, entries, at)
    pos = Positions(path)
    pos.values[()] = (1, 1)
    pos.values[("source",)] = src.where(at)
    data: dict[str, Any] = {
        "source": [path.name],
        "strict": False,  # seed bash has no `set -e`; its functions were written for that
        "params": {"data": seed_data_param(text)},
        "steps": [],
    }
    for i, e in enumerate(steps):
        data["steps"].append({"name": e.value, "run": f'{e.value} "$data"'})
        where = src.where(e.offset)
        pos.values[("steps", i)] = where
        pos.keys[("steps", i, "name")] = where
    if check:
        _check_functions(src, steps)
    return data, pos


def _check_functions(src: _Text, steps: list[Entry]) -> None:
    import shutil

    if shutil.which("bash") is None or shutil.which("env") is None:
        return  # nothing to ask; steps would fail to start anyway
    try:
        kinds = probe_names([src.path.name], [e.value for e in steps], src.path.parent)
    except WorkflowError as exc:
        raise WorkflowError(exc.detail, path=src.path) from None
    for e in steps:
        # Like the seed's `$current "$data"`, a builtin or a program on PATH would run too.
        if not kinds.get(e.value):
            raise src.error(
                f"step function {e.value!r} is not defined in the file (nor a command bash "
                "knows)", e.offset)
