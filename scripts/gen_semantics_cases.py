#!/usr/bin/env python3
"""Write, under each statement of docs/semantics.md, the conformance cases that prove it.

A statement is a paragraph starting ``**ID.**``; a case proves it when the ID is in the
case's ``proves:`` (tests/conformance/cases/*.yaml). The generated line ends the paragraph:
``Cases: `id-a`, `id-b`.`` With ``--check`` nothing is written; the exit status says whether
the document is up to date (the suite runs that).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conformance.harness import load_cases  # noqa: E402

DOC = ROOT / "docs" / "semantics.md"
STATEMENT = re.compile(r"^\*\*([A-Z]+-\d+)\.\*\*")
CASES_LINE = "Cases: "


def render(text: str) -> str:
    by_statement: dict[str, list[str]] = {}
    for case in load_cases():
        for sid in case.proves:
            by_statement.setdefault(sid, []).append(case.id)
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = STATEMENT.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        para = [lines[i]]
        i += 1
        while i < len(lines) and lines[i].strip():
            para.append(lines[i])
            i += 1
        para = [p for p in para if not p.startswith(CASES_LINE)]
        para[-1] = para[-1].rstrip() + "  "  # a line break before the cases
        ids = by_statement.get(m.group(1), [])
        para.append(CASES_LINE + (", ".join(f"`{c}`" for c in ids) if ids else "none yet") + ".")
        out.extend(para)
    return "\n".join(out)


def main() -> int:
    text = DOC.read_text()
    new = render(text)
    if "--check" in sys.argv[1:]:
        if new != text:
            print("docs/semantics.md: the Cases: lines are stale; run "
                  "scripts/gen_semantics_cases.py")
            return 1
        return 0
    DOC.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
