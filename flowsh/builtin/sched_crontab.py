"""Built-in scheduler ``crontab`` (the default): the seed's `schedule_workflow`, done safely.

Each workflow owns one block of the user's crontab, between ``# BEGIN flowsh:ID`` and
``# END flowsh:ID``, ID being the workflow's identity (its `name:`, else stem + path hash).
Adding replaces that block (or appends it), removing drops it; every other byte of the
table is written back as it was read. A block written before identities keyed schedules
(``flowsh:STEM``) for the same file is replaced by the new one, not left beside it.
If ``crontab -l`` fails for any reason but "no crontab for USER", nothing is written.

The crontab command is ``$FLOWSH_CRONTAB`` (split like a shell word list), default
``crontab`` — the test suite points it at ``crontab -u <a dedicated user>``.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flowsh import hookimpl
from flowsh.errors import NotFoundError, StateError, UsageError
from flowsh.hookspecs import Register

if TYPE_CHECKING:
    from flowsh.model import Workflow

_BEGIN = re.compile(r"^# BEGIN flowsh:(\S+)")
_END = "# END flowsh:{}"
_TZ = re.compile(r"^\s*CRON_TZ\s*=\s*(.*?)\s*$")


@dataclass
class CrontabEntry:
    name: str
    exprs: list[str]
    command: str
    source: str


def _command() -> list[str]:
    return shlex.split(os.environ.get("FLOWSH_CRONTAB") or "crontab")


def read_table() -> str:
    """The current crontab text; "" when the user has none; StateError if unreadable."""
    import sh

    cmd = _command()
    try:
        result: Any = sh.Command(cmd[0])(
            *cmd[1:], "-l", _ok_code=list(range(256)), _return_cmd=True
        )
    except sh.CommandNotFound:
        raise StateError(
            f"{cmd[0]}: command not found (install cron, or set FLOWSH_CRONTAB)"
        ) from None
    err = result.stderr.decode(errors="replace").strip()
    if result.exit_code == 0:
        return str(result.stdout.decode())
    if re.match(r"^no crontab for ", err):
        return ""
    raise StateError(
        f"cannot read the current crontab ({' '.join(cmd)} -l: "
        f"{err or f'exit code {result.exit_code}'}); not changing it"
    )


def write_table(text: str) -> None:
    import sh

    cmd = _command()
    try:
        sh.Command(cmd[0])(*cmd[1:], "-", _in=text.encode())
    except sh.CommandNotFound:
        raise StateError(f"{cmd[0]}: command not found") from None
    except sh.ErrorReturnCode as exc:
        msg = exc.stderr.decode(errors="replace").strip()
        raise StateError(f"crontab refused the new table: {msg}") from None


def split_blocks(text: str) -> tuple[list[str], dict[str, tuple[int, int]]]:
    """Lines (with their endings) and name -> (first, last) line index of each block."""
    lines = text.splitlines(keepends=True)
    blocks: dict[str, tuple[int, int]] = {}
    i = 0
    while i < len(lines):
        m = _BEGIN.match(lines[i])
        if m:
            name = m.group(1)
            end = _END.format(name)
            for j in range(i + 1, len(lines)):
                if lines[j].rstrip("\r\n") == end:
                    blocks[name] = (i, j)
                    i = j
                    break
        i += 1
    return lines, blocks


def _restore_tz(lines: list[str]) -> str:
    """The CRON_TZ in force at the end of the table, to put back after our entries."""
    tz = ""
    for line in lines:
        m = _TZ.match(line)
        if m:
            tz = m.group(1)
    return tz


class CrontabScheduler:
    name = "crontab"

    def add(
        self, wf: Workflow, exprs: list[str] | None = None, *, script: str | None = None,
        path: str | None = None,
    ) -> bool:
        """Install or replace the block for `wf`; False when it was already there as is."""
        from flowsh.schedjob import render_crontab

        table = read_table()
        lines, blocks = split_blocks(table)
        mine = owned_keys(wf, blocks, _sources(lines, blocks))
        if mine:
            # The first of this file's blocks is replaced in place; an old stem-keyed one
            # beside it is dropped (it would run the same file twice).
            first, last = blocks[mine[0]]
            drop = {i for k in mine[1:] for i in range(blocks[k][0], blocks[k][1] + 1)}
            before = [ln for i, ln in enumerate(lines[:first]) if i not in drop]
            after = [ln for i, ln in enumerate(lines) if i > last and i not in drop]
        else:
            before, after = lines, []
            if before and not before[-1].endswith("\n"):
                before = [*before[:-1], before[-1] + "\n"]
        block = render_crontab(wf, exprs, script=script, restore_tz=_restore_tz(before),
                               path=path)
        new = "".join(before) + block + "".join(after)
        if new == table:
            return False
        write_table(new)
        return True

    def remove(self, name: str) -> None:
        table = read_table()
        lines, blocks = split_blocks(table)
        key = resolve_name(name, _entries(lines, blocks), "crontab entry")
        first, last = blocks[key]
        write_table("".join(lines[:first] + lines[last + 1:]))

    def list(self) -> list[CrontabEntry]:
        return _entries(*split_blocks(read_table()))


def _entries(lines: list[str], blocks: dict[str, tuple[int, int]]) -> list[CrontabEntry]:
    out = []
    for name, (first, last) in blocks.items():
        head = lines[first]
        m = re.search(r"from (.*?); remove with", head)
        exprs, command = [], ""
        tz = None
        for line in lines[first + 1:last]:
            t = _TZ.match(line)
            if t:
                tz = t.group(1) or None
                continue
            if line.startswith("#") or not line.strip():
                continue
            fields = line.split(None, 5)
            if len(fields) == 6:
                expr = " ".join(fields[:5])
                exprs.append(f"CRON_TZ={tz} {expr}" if tz else expr)
                command = fields[5].rstrip("\n")
        out.append(CrontabEntry(name=name, exprs=exprs, command=command,
                         source=m.group(1) if m else ""))
    return out


def _sources(lines: list[str], blocks: dict[str, tuple[int, int]]) -> dict[str, str]:
    out = {}
    for key, (first, _) in blocks.items():
        m = re.search(r"from (.*?); remove with", lines[first])
        out[key] = m.group(1) if m else ""
    return out


def owned_keys(wf: Workflow, keys: Iterable[str], sources: dict[str, str]) -> list[str]:
    """The entries that are `wf`'s: keyed by its identity, or (written by a flowsh that
    keyed schedules by the bare name) by its name with `wf`'s file as their source."""
    from flowsh.schedjob import schedule_name

    ident = schedule_name(wf)
    keys = list(keys)
    out = [k for k in keys if k == ident]
    out += [k for k in keys if k != ident and k == wf.name and sources.get(k) == wf.path]
    return out


def resolve_name(arg: str, entries: list[CrontabEntry], what: str) -> str:
    """The entry key `arg` means: a key as `schedule list` prints it, the workflow file
    (its path), or a bare workflow name when exactly one entry has it."""
    keys = [e.name for e in entries]
    if arg in keys:
        return arg
    if "/" in arg or arg.endswith((".yaml", ".yml", ".toml", ".json", ".sh")):
        path = os.path.realpath(arg)
        found = [e.name for e in entries if e.source == path]
        if len(found) == 1:
            return found[0]
        if found:  # an old stem-keyed entry beside the new one: remove the new one first
            return next((k for k in found if re.search(r"-[0-9a-f]{8}$", k)), found[0])
        raise NotFoundError(f"no {what} for {arg} (see flowsh schedule list)")
    check_name(arg)
    found = [k for k in keys if re.fullmatch(re.escape(arg) + r"-[0-9a-f]{8}", k)]
    if len(found) == 1:
        return found[0]
    if found:
        which = "; ".join(f"{e.name} ({e.source})" for e in entries if e.name in found)
        raise UsageError(f"{arg!r} names {len(found)} scheduled workflows: {which}; "
                         "give one of those names or the file")
    raise NotFoundError(f"no {what} for workflow {arg!r} (see flowsh schedule list)")


def check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
        raise UsageError(f"{name!r} is not a workflow name")
    return name


@hookimpl
def flowsh_register_schedulers(register: Register) -> None:
    register("crontab", CrontabScheduler)
