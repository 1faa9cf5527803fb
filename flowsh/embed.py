"""`--inline`: a file a step uses, and every file it sources, embedded in the script.

Each embedded file is written at run time under ``$FLOWSH_FILES/root`` + its original
absolute path, so it keeps its name (``$0``, ``BASH_SOURCE``) and a file it sources by a
path relative to its own directory (``. "$(dirname "${BASH_SOURCE[0]}")/inner.sh"``,
``. "$DIR/inner.sh"`` with ``DIR`` set from such an expression) is found beside it
unchanged. A literal path (``source ./x.sh``, ``. lib/y.sh``, ``. /opt/z.sh``) is resolved
now, against the step's working directory as bash would, and that word is rewritten to
the embedded copy; a file missing at export is not embedded and its word stays as written
(an optional include finds it, or not, where `flowsh run` would). Any other ``source``
argument (a variable, a glob, a command) cannot be
followed statically: the export is refused with FILE:LINE naming it, never a silent loss.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

from flowsh.errors import WorkflowError
from flowsh.quoting import bash_quote

_SELF = r"(?:\$\{?BASH_SOURCE(?:\[0\])?\}?|\$\{?0\}?)"
# A directory of the file itself, with the double quotes removed.
_DIR = (
    rf"(?:\$\(\s*dirname\s+(?:--\s+)?{_SELF}\s*\)"
    rf"|\$\(\s*cd\s+(?:--\s+)?\$\(\s*dirname\s+(?:--\s+)?{_SELF}\s*\)\s*(?:&&|;)\s*pwd(?:\s+-P)?\s*\)"
    rf"|\$\{{BASH_SOURCE(?:\[0\])?%/\*\}}|\$\{{0%/\*\}})"
)
_DIR_VALUE = re.compile(rf"^{_DIR}$")
_DIR_ASSIGN = re.compile(
    r"^\s*(?:(?:local|readonly|export|declare(?:\s+-\w+)*)\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*?)\s*$"
)
_COMMAND = re.compile(r"(?:^|;|&&|\|\||\bthen\b|\bdo\b|\belse\b|[{(])\s*(\.|source)\s+")
_LITERAL = re.compile(r"^[^\s$`\\*?\[\]{}()<>|&;'\"]+$")
_RELATIVE = re.compile(rf"^(?:{_DIR}|\$\{{?(?P<var>[A-Za-z_][A-Za-z0-9_]*)\}}?)/(?P<rest>.+)$")


def _word(text: str) -> str:
    """The shell word at the start of `text` (quotes kept; `$( )` nesting followed)."""
    out, i, depth, quote = [], 0, 0, ""
    while i < len(text):
        c = text[i]
        if quote == "'":
            if c == "'":
                quote = ""
        elif c == "\\" and i + 1 < len(text):
            out.append(c)
            i += 1
            c = text[i]
        elif c == "'" and quote != '"':
            quote = "'"
        elif c == '"':
            quote = "" if quote == '"' and depth == 0 else ('"' if depth == 0 else quote)
        elif text.startswith("$(", i):
            depth += 1
            out.append("$")
            i += 1
            c = "("
        elif c == ")" and depth:
            depth -= 1
        elif not quote and depth == 0 and (c.isspace() or c in ";&|)"):
            break
        out.append(c)
        i += 1
    return "".join(out)


def _unquote(word: str) -> str:
    """The word with its quote characters dropped (enough for the forms accepted)."""
    if len(word) >= 2 and word[0] == word[-1] == "'":
        return word[1:-1]
    return word.replace('"', "")


def embed(path: Path, cwd: Path, seen: dict[str, str]) -> Iterator[dict[str, str]]:
    """Items to write for `path` and what it sources (recursively); `seen` maps each
    embedded file's resolved path to its run-time word (filled in here)."""
    key = str(path.resolve())
    seen.setdefault(key, mirror_word(key))
    try:
        content = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowError(f"cannot embed {path}: {exc}") from None
    dir_vars: set[str] = set()
    nested: list[Path] = []
    lines = content.split("\n")
    for n, line in enumerate(lines, 1):
        if line.lstrip().startswith("#"):
            continue
        m = _DIR_ASSIGN.match(line)
        if m and _DIR_VALUE.match(_unquote(m.group(2))):
            dir_vars.add(m.group(1))
        replaced = line
        for cmd in _COMMAND.finditer(line):
            word = _word(line[cmd.end():])
            if not word or word.startswith("#"):
                continue
            target, rewrite = _target(word, path, cwd, dir_vars)
            if target is None:
                raise WorkflowError(
                    f"cannot embed the file sourced by `{cmd.group(1)} {word}`: its path is "
                    "not a literal nor relative to the file's own directory (export without "
                    "--inline, or source it by such a path)", path=path, line=n,
                )
            if not target.exists():
                # Nothing to carry (`[ -r ./local.conf ] && . ./local.conf`): the word stays
                # as written, so the script looks for the file where `flowsh run` does.
                continue
            if not target.is_file():
                raise WorkflowError(f"cannot embed {word}: {target} is not a file",
                                    path=path, line=n)
            resolved = str(target.resolve())
            if rewrite:
                replaced = replaced.replace(word, mirror_word(resolved), 1)
            if resolved not in seen:
                seen[resolved] = mirror_word(resolved)
                nested.append(target)
        lines[n - 1] = replaced
    mode = "700" if os.access(path, os.X_OK) else "600"
    yield {"origin": key, "word": seen[key], "content": "\n".join(lines), "mode": mode}
    for target in nested:
        yield from embed(target, cwd, seen)


def _target(word: str, path: Path, cwd: Path, dir_vars: set[str]) -> tuple[Path | None, bool]:
    """(the file `word` names, whether the word must be rewritten) or (None, False)."""
    plain = _unquote(word)
    m = _RELATIVE.match(plain)
    if m and (m.group("var") is None or m.group("var") in dir_vars):
        rest = m.group("rest")
        if _LITERAL.match(rest):
            return path.resolve().parent / rest, False
        return None, False
    if _LITERAL.match(plain):
        target = Path(plain)
        return (target if target.is_absolute() else cwd / target), True
    return None, False


def mirror_word(path: str) -> str:
    """`"$FLOWSH_FILES"/root'/abs/path'`: where an embedded file lives at run time."""
    return '"$FLOWSH_FILES"/root' + bash_quote(path)
