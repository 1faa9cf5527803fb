"""Built-in reporters: the live view on a terminal, plain lines, quiet, JSON events.

A plugin like any other (`flowsh_make_reporter`), asked last: a third party that answers
for a kind replaces the built-in view of it.
"""

from __future__ import annotations

from flowsh import hookimpl
from flowsh.runopts import Reporter


@hookimpl
def flowsh_make_reporter(kind: str, state_url: str | None) -> Reporter | None:
    from flowsh.ui import JSONReporter, PlainReporter, QuietReporter, TTYReporter

    if kind == "json":
        return JSONReporter()
    if kind == "quiet":
        return QuietReporter(state_url=state_url)
    if kind == "tty":
        return TTYReporter(state_url=state_url)  # estimates come from the same store
    return PlainReporter(state_url=state_url)
