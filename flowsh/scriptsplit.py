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

What a step runs keeps what `main` meant: `main`'s top-level statements (an ``if … fi``,
a loop, a ``{ …; }`` group spanning lines is one statement) are read in order; a bare call
(``dump_db``) is a step running that function; a call with arguments (``rotate 7``) runs
with them; a statement that does more than call one function (``gen | store``,
``if check; then deploy; fi``, ``backup || alert``) becomes one step that runs the statement
as written, so a pipeline keeps its data and a condition its meaning. A statement that
calls no function but helpers (``cd /srv``, ``x=1``, ``log "start"``) is not a step: it
is listed for the reader.
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
_OPENERS = {"if", "case", "for", "while", "until", "select", "{"}
_CLOSERS = {"fi", "esac", "done", "}"}
_WORDS = re.compile(r"[^\s;&|()<>]+")


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


_HEREDOC = re.compile(r"<<-?[ \t]*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\1")


def _heredoc_end(line: str) -> tuple[str, bool] | None:
    """The terminator a line's here-document waits for (and whether `<<-` strips tabs)."""
    m = _HEREDOC.search(line)
    if m is None or "<<<" in line[max(0, m.start() - 1):m.end()]:
        return None
    return m.group(2), line[m.start():].startswith("<<-")


def _without_heredocs(text: str) -> str:
    """The text with each here-document's body blanked: its lines are data, not commands."""
    out: list[str] = []
    until: tuple[str, bool] | None = None
    for line in text.splitlines():
        if until is not None:
            word, tabs = until
            if (line.lstrip("\t") if tabs else line) == word:
                until = None
            out.append("")
            continue
        out.append(line)
        until = _heredoc_end(line)
    return "\n".join(out)


def calls(body: str, names: set[str]) -> list[str]:
    """The names from `names` that `body` runs as commands, in order of first call."""
    found: dict[str, None] = {}
    for line in _without_heredocs(body).splitlines():
        for part in _SEPARATORS.split(line):
            words = part.split()
            while words and words[0] in _KEYWORDS:
                words.pop(0)
            if words and words[0] in names:
                found.setdefault(words[0], None)
    return list(found)


def entry(text: str, defined: list[str]) -> str | None:
    """The function the script's last top-level statement calls (``main "$@"``,
    ``run_all "$@"``): the script's entry point, whatever its name; `main` if defined and
    nothing at top level calls another."""
    found = None
    inside = False
    for line in _without_heredocs(_without_comments(text)).splitlines():
        if inside:
            inside = not line.startswith("}")
            continue
        m = _DEF.match(line)
        if m:
            inside = not line.rstrip().endswith("}")
            continue
        words = line.split()
        if words and not line[0].isspace() and words[0] in defined:
            found = words[0]
    return found or ("main" if "main" in defined else None)


def stages(text: str) -> tuple[list[tuple[str, str]], bool, list[str]]:
    """([(function, what the step runs)], whether they came from an entry function such as
    `main`, statements of it that call no function and so are in no step)."""
    defined = functions(text)
    main = entry(text, defined)
    body = _body(text, main) if main else None
    if body is None:
        # No entry point: each function in file order, but not helpers other functions
        # call (they would run twice: on their own and inside their caller).
        called = {c for f in defined for c in calls(_body(text, f) or "", set(defined) - {f})}
        return [(f, f) for f in defined if f not in called], False, []
    wanted = set(defined) - {main}
    helpers = {c for f in wanted for c in calls(_body(text, f) or "", wanted - {f})}
    out: list[tuple[str, str]] = []
    left: list[str] = []
    for stmt in _statements(body):
        found = calls(stmt, wanted)
        stages_ = [c for c in found if c not in helpers]
        if not stages_ and stmt in found:
            # A helper main calls on its own, bare (`restart` after `deploy`, which calls
            # it too): a stage all the same. With arguments (`log "start"`) it is not.
            stages_ = [stmt]
        if not stages_:  # `cd /srv`, `log "starting"`: no stage of its own
            if stmt.strip() not in ("", "}"):
                left.append(stmt)
            continue
        out.append((stages_[0], stmt))
    return out, True, left


def _statements(body: str) -> list[str]:
    """`main`'s top-level statements in order, each dedented: multi-line compounds whole,
    a line of ``a; b && c`` as its parts (sequential steps mean the same)."""
    import textwrap

    out: list[str] = []
    current: list[str] = []
    depth = 0
    until: tuple[str, bool] | None = None  # in a here-document: its lines are data
    for line in body.splitlines():
        if until is not None:
            current.append(line)
            word, tabs = until
            if (line.lstrip("\t") if tabs else line) == word:
                until = None
                if depth <= 0:
                    out.append(textwrap.dedent("\n".join(current)).strip())
                    depth, current = 0, []
            continue
        if not line.strip() and not current:
            continue
        current.append(line)
        until = _heredoc_end(line)
        if until is not None:
            continue
        for word in _WORDS.findall(line):
            depth += (word in _OPENERS) - (word in _CLOSERS)
        if depth <= 0:
            stmt = textwrap.dedent("\n".join(current)).strip()
            depth, current = 0, []
            if "\n" in stmt or "|" in stmt or _opens(stmt):
                out.append(stmt)
            else:
                out.extend(p.strip() for p in re.split(r";|&&", stmt) if p.strip())
    if current:
        out.append(textwrap.dedent("\n".join(current)).strip())
    return _with_waits([s.rstrip(";").rstrip() for s in out if s not in ("{", "}")])


def _with_waits(stmts: list[str]) -> list[str]:
    """``job &`` … ``wait`` stay one statement: as separate steps, the background job
    would be stopped when its step ended (flowsh stops what a step leaves running)."""
    out: list[str] = []
    group: list[str] = []
    for stmt in stmts:
        if group or (stmt.endswith("&") and not stmt.endswith("&&")):
            group.append(stmt)
            if stmt == "wait" or stmt.startswith("wait "):
                out.append("\n".join(group))
                group = []
            continue
        out.append(stmt)
    if group:
        out.append("\n".join([*group, "wait"]))
    return out


def _opens(stmt: str) -> bool:
    return any(w in _OPENERS for w in _WORDS.findall(stmt))
