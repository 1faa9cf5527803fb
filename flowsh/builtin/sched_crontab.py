"""Built-in scheduler ``crontab`` (the default): the seed's `schedule_workflow`, done safely.

Each workflow owns one block of the user's crontab, between ``# BEGIN flowsh:NAME`` and
``# END flowsh:NAME``. Adding replaces that block (or appends it), removing drops it; every
other byte of the table is written back as it was read. If ``crontab -l`` fails for any
reason but "no crontab for USER", nothing is written.

The crontab command is ``$FLOWSH_CRONTAB`` (split like a shell word list), default
``crontab`` — the test suite points it at ``crontab -u <a dedicated user>``.
"""

from __future__ import annotations

import os
import re
import shlex
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
class Entry:
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
        from flowsh.export import render_crontab

        table = read_table()
        lines, blocks = split_blocks(table)
        if wf.name in blocks:
            first, last = blocks[wf.name]
            before, after = lines[:first], lines[last + 1:]
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
        if name not in blocks:
            raise NotFoundError(
                f"no crontab entry for workflow {name!r} (see flowsh schedule list)"
            )
        first, last = blocks[name]
        write_table("".join(lines[:first] + lines[last + 1:]))

    def list(self) -> list[Entry]:
        lines, blocks = split_blocks(read_table())
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
            out.append(Entry(name=name, exprs=exprs, command=command,
                             source=m.group(1) if m else ""))
        return out


def check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
        raise UsageError(f"{name!r} is not a workflow name")
    return name


@hookimpl
def flowsh_register_schedulers(register: Register) -> None:
    register("crontab", CrontabScheduler)
