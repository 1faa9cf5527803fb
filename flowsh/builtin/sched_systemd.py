"""Built-in scheduler ``systemd``: a user `.service` + `.timer` pair per workflow.

Units go to ``$XDG_CONFIG_HOME/systemd/user`` (default ``~/.config/systemd/user``) as
``flowsh-ID.service`` / ``flowsh-ID.timer`` (ID: the workflow's identity, its `name:` or
stem + path hash, so two `backup.yaml` get two pairs) and are managed with ``systemctl --user``.
The systemctl command is ``$FLOWSH_SYSTEMCTL`` (split like a shell word list), default
``systemctl``. Only files carrying flowsh's marker comment are listed or removed.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from flowsh import hookimpl
from flowsh.errors import NotFoundError, StateError
from flowsh.fileio import atomic_write
from flowsh.hookspecs import Register
from flowsh.schedjob import unit_name

if TYPE_CHECKING:
    from flowsh.builtin.sched_crontab import CrontabEntry
    from flowsh.model import Workflow

_MARK = re.compile(r"^# Managed by flowsh \(flowsh:(\S+)\) from (.*)\.$", re.M)


def unit_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "systemd" / "user"


def systemctl(*args: str) -> None:
    import sh

    cmd = shlex.split(os.environ.get("FLOWSH_SYSTEMCTL") or "systemctl")
    try:
        sh.Command(cmd[0])(*cmd[1:], "--user", *args)
    except sh.CommandNotFound:
        raise StateError(f"{cmd[0]}: command not found (no systemd here?)") from None
    except sh.ErrorReturnCode as exc:
        msg = exc.stderr.decode(errors="replace").strip()
        raise StateError(f"systemctl --user {' '.join(args)} failed: {msg}") from None


def _write(path: Path, text: str) -> None:
    """Atomically, 0600 (units may name paths and env of the user)."""
    atomic_write(path, text, 0o600)


class SystemdScheduler:
    name = "systemd"

    def add(
        self, wf: Workflow, exprs: list[str] | None = None, *, script: str | None = None,
        path: str | None = None,
    ) -> bool:
        from flowsh.builtin.sched_crontab import owned_keys
        from flowsh.schedjob import render_systemd

        units = render_systemd(wf, exprs, script=script, path=path)
        d = unit_dir()
        # A pair written when units were named after the bare stem, for this same file:
        # replaced by the new pair, not left to run the file a second time.
        entries = self.list()
        timer = next(n for n in units if n.endswith(".timer"))
        old = [k for k in owned_keys(wf, [e.name for e in entries],
                                     {e.name: e.source for e in entries})
               if f"{unit_name(k)}.timer" != timer]
        for key in old:
            self._drop(key)
        try:
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"{d}: cannot create directory: {exc.strerror}") from None
        changed = False
        for fname, text in units.items():
            unit = d / fname
            if not unit.exists() or unit.read_text() != text:
                _write(unit, text)
                changed = True
        if changed or old:
            systemctl("daemon-reload")
        systemctl("enable", "--now", timer)
        return changed

    def remove(self, name: str) -> None:
        from flowsh.builtin.sched_crontab import resolve_name

        self._drop(resolve_name(name, self.list(), "systemd timer"))
        systemctl("daemon-reload")

    def _drop(self, name: str) -> None:
        unit = unit_name(name)
        d = unit_dir()
        timer, service = d / f"{unit}.timer", d / f"{unit}.service"
        if not timer.exists() or not _MARK.search(timer.read_text()):
            raise NotFoundError(
                f"no systemd timer for workflow {name!r} (see flowsh schedule list)"
            )
        systemctl("disable", "--now", f"{unit}.timer")
        for path in (timer, service):
            if path.exists() and _MARK.search(path.read_text()):
                path.unlink()

    def list(self) -> list[CrontabEntry]:
        from flowsh.builtin.sched_crontab import CrontabEntry

        out: list[CrontabEntry] = []
        d = unit_dir()
        if not d.is_dir():
            return out
        for timer in sorted(d.glob("flowsh-*.timer")):
            text = timer.read_text()
            m = _MARK.search(text)
            if not m:
                continue
            exprs = [ln[2:] for ln in text.splitlines()
                     if ln.startswith("# ") and not ln.startswith("# Managed")]
            service = timer.with_suffix(".service")
            command = ""
            if service.exists():
                for ln in service.read_text().splitlines():
                    if ln.startswith("ExecStart="):
                        command = ln.removeprefix("ExecStart=")
            out.append(CrontabEntry(name=m.group(1), exprs=exprs, command=command,
                                    source=m.group(2)))
        return out


@hookimpl
def flowsh_register_schedulers(register: Register) -> None:
    register("systemd", SystemdScheduler)
