"""Step outputs: ``KEY=VALUE`` lines a step appends to ``$FLOWSH_OUTPUT``.

A multi-line value uses a heredoc-style block, as GitHub Actions does::

    echo 'REPORT<<EOF' >> "$FLOWSH_OUTPUT"; cat report.txt >> "$FLOWSH_OUTPUT"; echo EOF >> ...
"""

from __future__ import annotations

from pathlib import Path

from flowsh.model import IDENT


def parse_outputs(text: str) -> tuple[dict[str, str], str | None]:
    """Return (outputs, first malformed line or None)."""
    out: dict[str, str] = {}
    bad: str | None = None
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if sep and IDENT.match(key):
            out[key] = value
            continue
        key, sep, delim = line.partition("<<")
        if sep and IDENT.match(key) and delim:
            block = []
            while i < len(lines) and lines[i] != delim:
                block.append(lines[i])
                i += 1
            if i < len(lines):
                i += 1
                out[key] = "\n".join(block)
                continue
        if bad is None:
            bad = line[:80]
    return out, bad


def read_outputs(path: Path) -> tuple[dict[str, str], str | None]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return {}, None
    return parse_outputs(text)
