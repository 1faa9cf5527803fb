"""Step outputs: ``KEY=VALUE`` lines a step appends to ``$FLOWSH_OUTPUT``.

A multi-line value uses a heredoc-style block, as GitHub Actions does::

    echo 'REPORT<<EOF' >> "$FLOWSH_OUTPUT"; cat report.txt >> "$FLOWSH_OUTPUT"; echo EOF >> ...

The file is read as bytes and split on ``\\n`` only: a ``\\r`` is part of a value, never a
line break (text mode's universal newlines once turned ``A=$'x\\rPATH=/y'`` into a second
output named PATH). Bytes that are not UTF-8 are kept with ``surrogateescape``, so a value
reaches the next step's environment byte for byte (``os.fsencode`` undoes it).

A line that is not an output — a name that is not an identifier, a name the environment
depends on (PATH, BASH_ENV, LD_*, FLOWSH_*...), an unterminated block — makes the step fail
with one message naming it (`OutputError`).
"""

from __future__ import annotations

from pathlib import Path

from flowsh.model import BASH_SETS, IDENT

# Names a step may not set for the steps after it: each changes how the shell or the
# dynamic linker behaves, or is flowsh's own.
REFUSED = frozenset({
    "PATH", "HOME", "IFS", "ENV", "BASH_ENV", "SHELLOPTS", "BASHOPTS", "PS4",
    "PROMPT_COMMAND", "CDPATH", "GLOBIGNORE",
})
REFUSED_PREFIXES = ("LD_", "BASH_FUNC_")


# A step's outputs reach the steps after it in their environment, where Linux limits one
# string to 128 KiB (MAX_ARG_STRLEN): more would make every later step, `always` cleanups
# included, fail to start ("Argument list too long"). Refused at the step that wrote them
# (OUT-7), as a library's variables are (SOURCE-5).
MAX_OUTPUT_BYTES = 120_000


class OutputError(ValueError):
    """A line of ``$FLOWSH_OUTPUT`` that is not a valid output (the message names it)."""


def refused_name(name: str) -> bool:
    return (name in REFUSED or name in BASH_SETS or name.startswith(REFUSED_PREFIXES)
            or name.upper().startswith("FLOWSH_"))


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _show(name: bytes) -> str:
    return repr(name[:60].decode("utf-8", "replace"))[1:-1]


def _check(name: bytes, lineno: int) -> str:
    text = _decode(name)
    if not IDENT.match(text):
        raise OutputError(f"$FLOWSH_OUTPUT line {lineno}: output name '{_show(name)}' is not "
                          "an identifier (letters, digits, _)")
    if text in BASH_SETS:
        raise OutputError(f"$FLOWSH_OUTPUT line {lineno}: output {text} is refused: the "
                          f"step's bash sets {text} itself (when it starts, or on every read; "
                          "PARAM-6)")
    if refused_name(text):
        raise OutputError(f"$FLOWSH_OUTPUT line {lineno}: output {text} is refused: the "
                          "environment depends on it (PATH, HOME, IFS, ENV, BASH_ENV, LD_*, "
                          "BASH_FUNC_*, FLOWSH_*...)")
    return text


def parse_outputs(data: bytes) -> dict[str, str]:
    """The outputs in `data`; raises OutputError at the first line that is not one."""
    out: dict[str, str] = {}
    if b"\0" in data:
        lineno = data[:data.index(b"\0")].count(b"\n") + 1
        raise OutputError(f"$FLOWSH_OUTPUT line {lineno}: a NUL byte: an environment "
                          "variable cannot hold one")
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        lineno = i
        if not line.strip(b" \t"):
            continue
        eq, heredoc = line.find(b"="), line.find(b"<<")
        if eq >= 0 and (heredoc < 0 or eq < heredoc):
            out[_check(line[:eq], lineno)] = _decode(line[eq + 1:])
            continue
        if heredoc < 0:
            raise OutputError(f"$FLOWSH_OUTPUT line {lineno}: '{_show(line)}' is neither "
                              "NAME=value nor NAME<<DELIMITER")
        name, delim = _check(line[:heredoc], lineno), line[heredoc + 2:]
        if not delim:
            raise OutputError(f"$FLOWSH_OUTPUT line {lineno}: output {name}: '<<' without "
                              "a delimiter")
        block: list[bytes] = []
        while i < len(lines) and lines[i] != delim:
            block.append(lines[i])
            i += 1
        if i >= len(lines):
            raise OutputError(f"$FLOWSH_OUTPUT line {lineno}: output {name}: no line "
                              f"'{_show(delim)}' ends the block")
        i += 1
        out[name] = _decode(b"\n".join(block))
    size = sum(len(k) + len(v.encode("utf-8", "surrogateescape")) + 2 for k, v in out.items())
    if size > MAX_OUTPUT_BYTES:
        raise OutputError(f"$FLOWSH_OUTPUT: the outputs take {size} bytes; steps get them in "
                          f"their environment, which holds at most {MAX_OUTPUT_BYTES} (keep "
                          "large data in files)")
    return out


def read_outputs(path: Path) -> dict[str, str]:
    """The outputs a step wrote to `path` (none when it wrote no file)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    return parse_outputs(data)
