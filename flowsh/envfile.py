"""env_file: the subset of shell assignments docs/semantics.md specifies (shared rule 5)."""

from __future__ import annotations

import re
from pathlib import Path

from flowsh.errors import WorkflowError


def read_env_file(path: Path) -> dict[str, str]:
    """An env_file: the subset of shell assignments in docs/semantics.md (shared rule 5).

    The exported script's bash reader (templates/bash) implements the same grammar; both
    must give the same bytes for every file, so this is written as the same state machine
    rather than with a dotenv library. Bytes are kept as bytes (surrogateescape): a value
    reaches a step exactly as written. Refusals are FILE:LINE (exit 2).
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise WorkflowError(f"cannot read env_file: {exc.strerror}", path=path) from None
    if b"\0" in raw:
        # An environment variable cannot hold a NUL byte (it ends the C string).
        line = raw[:raw.index(b"\0")].count(b"\n") + 1
        raise WorkflowError("a NUL byte: an environment variable cannot hold one",
                            path=path, line=line)
    return parse_env_text(raw.decode("utf-8", "surrogateescape"), path)


_ENV_EXPORT = re.compile(r"export[ \t]+(.*)\Z", re.S)
_ENV_ASSIGN = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)\Z", re.S)
_ENV_BADNAME = re.compile(r"([^= \t]+)=")
# `;|&<>()` end a shell word: a shell would run or redirect what follows (ENVFILE-2).
_ENV_PLAIN = re.compile(r"[^'\"\\$` \t;|&<>()]+")
_ENV_OPERATORS = ";|&<>()"
_ENV_INSIDE = re.compile(r'[^"\\$`]+')
_ENV_BLANKS = re.compile(r"[ \t]+")
_SPECIAL = "$#?-!@*"  # bash's special parameters ($0-$9 are digits, refused with the rest)


def parse_env_text(text: str, path: Path) -> dict[str, str]:
    """Parse env_file text (see `read_env_file`); `path` is for messages only."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline ending the last line ends it; it starts no other
    out: dict[str, str] = {}
    n = 0

    def refuse(line: int, message: str) -> WorkflowError:
        return WorkflowError(message, path=path, line=line)

    def dollar(line: int, name: str, rest: str, quoted: bool = False) -> None:
        # $NAME, ${...}, $(...), the special parameters ($$ $# $? ...) and, unquoted, $'...'
        # and $"..." are refused; a lone $ (as in `5$`) is data, as in shell.
        nxt = rest[1:2]
        if nxt == "\\" and rest[2:] == "":
            # A shell joins the lines before it looks at the $: `$\<newline>HOME` is $HOME.
            raise refuse(line, f"{name}: a $ before a backslash-newline is not allowed in an "
                               "env_file (single-quote a literal $)")
        special = _SPECIAL if quoted else _SPECIAL + "'\""
        if nxt and ((nxt.isascii() and (nxt.isalnum() or nxt in "_{([")) or nxt in special):
            raise refuse(line, f"{name}: expansion ${nxt}... is not allowed in an env_file "
                               "(single-quote a literal $)")

    def tilde(line: int, name: str) -> WorkflowError:
        return refuse(line, f"{name}: an unquoted ~ at the start or after a : is a home "
                            "directory to a shell; quote it ('~') or write the path")

    def backtick(line: int, name: str) -> WorkflowError:
        return refuse(line, f"{name}: command substitution (`) is not allowed in an env_file")

    while n < len(lines):
        rest = lines[n]
        n += 1
        start = n
        rest = rest.lstrip(" \t")
        if not rest or rest.startswith("#"):
            continue
        m = _ENV_EXPORT.match(rest)
        if m:
            rest = m.group(1)
        m = _ENV_ASSIGN.match(rest)
        if m is None:
            bad = _ENV_BADNAME.match(rest)
            if bad:
                raise refuse(n, f"invalid name '{bad.group(1)}' (letters, digits and _, "
                                "not starting with a digit)")
            raise refuse(n, "not an assignment (NAME=value expected)")
        name, rest = m.group(1), m.group(2)
        if name.upper().startswith("FLOWSH_"):
            # ENV-3: the runner's own names (the exported script's runner read them too).
            raise refuse(n, f"{name}: names starting with FLOWSH_ are reserved for flowsh")
        val: list[str] = []
        # Tilde expansion in an assignment: a ~ first in the value, or after a plain `:`
        # (a backslash-newline between them joins the lines, so it changes neither).
        first, after_colon = True, False
        while rest:
            m = _ENV_PLAIN.match(rest)
            if m:
                chunk = m.group(0)
                if (chunk[0] == "~" and (first or after_colon)) or ":~" in chunk:
                    raise tilde(n, name)
                val.append(chunk)
                rest = rest[m.end():]
                first, after_colon = False, chunk.endswith(":")
                continue
            c = rest[0]
            if not (c == "\\" and len(rest) == 1):
                first = after_colon = False
            if c in " \t":
                m = _ENV_BLANKS.match(rest)
                assert m is not None
                rest = rest[m.end():]
                if not rest or rest.startswith("#"):
                    break  # blanks then a comment, or trailing blanks: the value ends
                # A shell ends the value at the blank and runs the rest as a command.
                raise refuse(n, f"{name}: a blank inside an unquoted value (quote the value)")
            elif c == "'":
                rest = rest[1:]
                while "'" not in rest:
                    if n >= len(lines):
                        raise refuse(start, f"{name}: unterminated ' quote")
                    val.append(rest + "\n")
                    rest = lines[n]
                    n += 1
                end = rest.index("'")
                val.append(rest[:end])
                rest = rest[end + 1:]
            elif c == '"':
                rest = rest[1:]
                while True:
                    m = _ENV_INSIDE.match(rest)
                    if m:
                        val.append(m.group(0))
                        rest = rest[m.end():]
                        continue
                    d = rest[:1]
                    if d == "":
                        if n >= len(lines):
                            raise refuse(start, f'{name}: unterminated " quote')
                        val.append("\n")
                        rest = lines[n]
                        n += 1
                    elif d == '"':
                        rest = rest[1:]
                        break
                    elif d == "\\":
                        e = rest[1:2]
                        if e and e in '"\\$`':
                            val.append(e)
                            rest = rest[2:]
                        elif e == "":  # backslash-newline: the line goes on
                            if n >= len(lines):
                                raise refuse(start, f'{name}: unterminated " quote')
                            rest = lines[n]
                            n += 1
                        else:
                            val.append("\\")
                            rest = rest[1:]
                    elif d == "$":
                        dollar(n, name, rest, quoted=True)
                        val.append("$")
                        rest = rest[1:]
                    else:
                        raise backtick(n, name)
            elif c == "\\":
                if len(rest) == 1:  # backslash-newline outside quotes: goes on next line
                    rest = ""
                    if n < len(lines):
                        rest = lines[n]
                        n += 1
                else:
                    val.append(rest[1])
                    rest = rest[2:]
            elif c == "$":
                dollar(n, name, rest)
                val.append("$")
                rest = rest[1:]
            elif c in _ENV_OPERATORS:
                raise refuse(n, f"{name}: an unquoted {c!r} ends the value and makes a shell "
                                "run or redirect what follows (quote the value)")
            else:
                raise backtick(n, name)
        out[name] = "".join(val)
    return out
