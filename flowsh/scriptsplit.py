"""A plain bash script's functions, for `flowsh init --from SCRIPT`.

The common shape of an operations script is functions plus ``main "$@"``, where `main`
calls the others in order. `init --from` turns each function `main` calls into a step
(in the order `main` calls them, each once), or — with no `main` — each function the
script defines, in file order. The script becomes the workflow's `source:` library: flowsh
reads it for definitions only (never its top-level `main "$@"`), so each step calls one
function.

A function that the other functions call too (``log``, ``die``) is a helper, not a stage,
and gets no step of its own.

This is a reader of the usual layout, not a bash parser: function definitions
(``name() {``, ``function name {``), and in `main`'s body the words in command position
(line start, after ``;`` ``&&`` ``||`` ``|``, ``then``/``do``/``else``/``if``/``!``...) that
name a defined function. Anything it cannot see stays inside the functions, untouched.
"""

from __future__ import annotations

import re

_DEF = re.compile(
    r"^[ \t]*(?:function[ \t]+([A-Za-z_][A-Za-z0-9_:.-]*)[ \t]*(?:\(\))?"
    r"|([A-Za-z_][A-Za-z0-9_:.-]*)[ \t]*\(\))[ \t]*\{?",
    re.M,
)
_SEPARATORS = re.compile(r"&&|\|\||[;&|(){}`]|\$\(")
_KEYWORDS = {"if", "then", "do", "else", "elif", "while", "until", "time", "!", "command"}


def functions(text: str) -> list[str]:
    """Names of the functions defined at any line start, in file order, each once."""
    names: dict[str, None] = {}
    for m in _DEF.finditer(_without_comments(text)):
        names.setdefault(m.group(1) or m.group(2), None)
    return list(names)


def _without_comments(text: str) -> str:
    # Whole-line comments only: a `#` inside a line may be data ("${x#y}", '#').
    return "\n".join("" if ln.lstrip().startswith("#") else ln for ln in text.splitlines())


def _body(text: str, name: str) -> str | None:
    """The lines of `name`'s body: from its definition to the first `}` in column 0."""
    lines = _without_comments(text).splitlines()
    for i, line in enumerate(lines):
        m = _DEF.match(line)
        if m and (m.group(1) or m.group(2)) == name:
            rest = line[m.end():]
            if rest.rstrip().endswith("}"):
                return rest  # a one-line function: name() { ...; }
            body = [rest]
            for nxt in lines[i + 1:]:
                if nxt.startswith("}") or _DEF.match(nxt):
                    break
                body.append(nxt)
            return "\n".join(body)
    return None


def steps_of(text: str) -> tuple[list[str], bool]:
    """(the functions to make steps of, in order; whether they came from `main`)."""
    defined = functions(text)
    body = _body(text, "main") if "main" in defined else None
    if body is None:
        return defined, False
    wanted = set(defined) - {"main"}
    # A helper (`log`, `die`) is called by the other functions too: it is not a stage.
    helpers = {c for f in wanted for c in calls(_body(text, f) or "", wanted - {f})}
    return [c for c in calls(body, wanted) if c not in helpers], True


def calls(body: str, names: set[str]) -> list[str]:
    """The names from `names` that `body` runs as commands, in order of first call."""
    found: dict[str, None] = {}
    for line in body.splitlines():
        for part in _SEPARATORS.split(line):
            words = part.split()
            while words and words[0] in _KEYWORDS:
                words.pop(0)
            if words and words[0] in names:
                found.setdefault(words[0], None)
    return list(found)
