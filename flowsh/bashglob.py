"""`sources:`/`generates:` globs, expanded by bash itself (docs/semantics.md UPTODATE).

The contract reads these globs "like bash" (globstar on; dotglob, extglob off), and the
exported script lets its bash expand them (templates/bash/uptodate.sh.j2). Python's glob
is another dialect where it matters to a fingerprint: its `**` follows symlinked
directories (a `self -> .` link made the walk endless) and its `[^x]` is the set {^, x}
where bash reads a negated class. bash's own globstar has version quirks (since 4.3 it
does not enter a symlinked directory below the first level, at the first level it
sometimes does), which no copy would follow exactly: so flowsh asks the same bash the
exported script runs under, and both runtimes hash the same files by construction.

The expansion runs in a child process: a signal to flowsh (SIGTERM, Ctrl-C) stops it at
once instead of waiting for a walk of a huge tree to end.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterable

# Not split (IFS is empty), only expanded, as flowsh_utd_files does; NUL-separated, since
# a name may hold a newline.
_EXPAND = ("shopt -s globstar nullglob; shopt -u dotglob extglob failglob nocaseglob; "
           'IFS=; for __p; do [[ -n $__p ]] || continue; __g=($__p); '
           '(( ${#__g[@]} )) && printf "%s\\0" "${__g[@]}"; done; exit 0')
# The locale decides what `?` and classes make of non-ASCII names, as in the script.
_LOCALE = ("LANG", "LC_ALL", "LC_CTYPE", "LC_COLLATE")
POLL = 0.2


class Stopped(Exception):
    """Asked to stop (a signal came while flowsh was expanding or hashing)."""


def expand(patterns: Iterable[str], cwd: str | os.PathLike[str],
           stopped: Callable[[], bool] = lambda: False) -> list[str]:
    """What bash's pathname expansion makes of each pattern in `cwd` (nothing for a
    pattern that matches nothing), in its order, duplicates kept."""
    given = [p for p in patterns if p]
    if not given:
        return []
    env = {k: os.environ[k] for k in _LOCALE if k in os.environ}
    env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
    proc = subprocess.Popen(["bash", "--noprofile", "--norc", "-c", _EXPAND, "flowsh-glob",
                             *given], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    while True:
        try:
            out, _ = proc.communicate(timeout=POLL)
            break
        except subprocess.TimeoutExpired:
            if stopped():
                proc.kill()
                proc.communicate()
                raise Stopped from None
    return [os.fsdecode(p) for p in out.split(b"\0") if p]


def match_files(patterns: Iterable[str], cwd: str | os.PathLike[str],
                stopped: Callable[[], bool] = lambda: False) -> list[str]:
    """The regular files the globs match (a symlink to one counts, as `[[ -f ]]` says),
    relative to `cwd` as written, sorted, without duplicates."""
    base = os.fspath(cwd)
    return sorted({rel for rel in expand(patterns, base, stopped)
                   if os.path.isfile(os.path.join(base, rel))})
