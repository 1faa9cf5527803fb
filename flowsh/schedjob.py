"""What a scheduler installs for a workflow: the crontab block and the systemd units.

Every entry is keyed by the workflow's identity (docs/semantics.md IDENT-1): its declared
`name:`, else the file's stem plus a hash of its path. Two files with the same stem
(`app1/backup.yaml`, `app2/backup.yaml`) or stems that both fall back to `workflow` get
two blocks, two unit pairs and two cron logs; keyed by the bare name, the second
`schedule add` replaced the first file's entry without a word (rt18 #1).

The environment that decides where flowsh keeps runs and reads its config
(FLOWSH_HOME always; FLOWSH_STATE, FLOWSH_CONFIG, XDG_CONFIG_HOME when set) is written on
the line: cron's environment carries none of the user's (rt18 #15).
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flowsh.errors import UsageError

if TYPE_CHECKING:
    from flowsh.model import Workflow

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
# Carried from the environment `schedule add` runs in, when set (FLOWSH_HOME is always
# written: its default depends on HOME and XDG_STATE_HOME, which cron may not share).
CARRIED_ENV = ("FLOWSH_STATE", "FLOWSH_CONFIG", "XDG_CONFIG_HOME")


def schedule_name(wf: Workflow) -> str:
    """The key of `wf`'s schedule entries: its identity."""
    return str(wf.identity)


@dataclass
class Job:
    """What a scheduler runs for a workflow: argv, cwd and env, all absolute."""

    name: str
    source: str
    argv: list[str]
    cwd: str
    env: list[tuple[str, str]]
    log: str
    lock: str | None = None  # an exported script's flock file


def _absolute_state_url(url: str) -> str:
    """A relative or `~` `json://DIR` / `sqlite://FILE` made absolute: cron starts in $HOME.

    The backends read what follows `scheme://` as the path (`json://state` is relative,
    `json:///srv/state` absolute); other schemes (a plugin's) are written as given.
    """
    m = re.match(r"^(json|sqlite)://(.*)$", url, re.S)
    if not m:
        return url
    raw = m.group(2)
    raw = raw[1:] if raw.startswith("//") else raw
    if not raw or raw.lstrip("/") == ":memory:":
        return url
    return f"{m.group(1)}://{Path(os.path.expanduser(raw)).resolve()}"


def carried_env() -> list[tuple[str, str]]:
    """FLOWSH_STATE / FLOWSH_CONFIG / XDG_CONFIG_HOME as set now, paths made absolute."""
    out = []
    for key in CARRIED_ENV:
        value = os.environ.get(key)
        if not value:
            continue
        if key == "FLOWSH_STATE":
            # A database password stays out of the crontab (cron's run finds it in
            # ~/.pgpass, docs/distributed.md). Imported here: secrets brings the model
            # (pydantic), which the crontab-listing paths never need.
            from flowsh.secrets import url_without_password

            value = url_without_password(_absolute_state_url(value))
        else:
            value = str(Path(value).expanduser().resolve())
        out.append((key, value))
    return out


def _own_exprs(wf: Workflow, exprs: list[str] | None) -> list[str]:
    """The entry's expressions when they are not the file's `schedule` (--cron)."""
    return list(exprs) if exprs and list(exprs) != list(wf.schedule) else []


def scheduled_job(
    wf: Workflow, *, script: str | None = None, path: str | None = None,
    exprs: list[str] | None = None,
) -> Job:
    """`flowsh run FILE --resume` (its own lock decides overlaps) or an exported script
    under flock. PATH is cron's minimal default unless `path` is given (deduplicated)."""
    # Imported here, as below: the scheduler plugins import this module when any command
    # starts, and flowsh.export brings the model, notify and jinja2 (13 more modules for
    # `flowsh history`).
    from flowsh.cron import clean_path
    from flowsh.export import base_dir, flowsh_argv
    from flowsh.state import flowsh_home

    if wf.path is None:
        raise UsageError("a scheduled workflow needs a file path")
    if wf.required_params:
        # Every tick would exit 2 before running (rt18 #14): a scheduled line passes none.
        names = ", ".join(wf.required_params)
        what = (f"parameter {names} has" if len(wf.required_params) == 1
                else f"parameters {names} have")
        raise UsageError(
            f"{wf.path}: {what} no default, and a scheduled run passes no parameters; "
            "give each a default in the file (`day: monday`, or compute it in a step)")
    name = schedule_name(wf)
    home = flowsh_home().resolve()
    env = [("PATH", clean_path(path or DEFAULT_PATH)), ("FLOWSH_HOME", str(home)),
           *carried_env()]
    if script is not None:
        spath = Path(script).resolve()
        if not spath.is_file():
            raise UsageError(f"{script}: no such script (export it first with --bash -o)")
        lock = home / "exported" / name / "cron.lock"
        # No --resume: the script refuses a checkpoint from another version of the workflow,
        # so after a re-export every scheduled run would fail until someone cleared it.
        # --scheduled: the script computes its slot as flowsh run does (SLOT-2); not for
        # expressions other than the file's, which the script does not carry.
        argv = ["flock", "-n", "-E", "75", str(lock), str(spath),
                *([] if _own_exprs(wf, exprs) else ["--scheduled"])]
        cwd = str(spath.parent)
    else:
        # --scheduled: the run computes its slot when it starts (cron may start it late);
        # expressions given with --cron instead of the file's travel with it (SLOT-2).
        argv = [*flowsh_argv(), "run", wf.path, "--resume", "--scheduled",
                *(a for e in _own_exprs(wf, exprs) for a in ("--scheduled-cron", e))]
        cwd = str(base_dir(wf).resolve())
    return Job(
        name=name, source=wf.path, argv=argv, cwd=cwd, env=env,
        log=str(home / "cron" / f"{name}.log"),
        lock=str(lock) if script is not None else None,
    )


def _cron_command(job: Job, *, script: bool) -> str:
    """The command of a crontab line; docs/scheduling.md explains each part."""
    assigns = " ".join(f"{k}={shlex.quote(v)}" for k, v in job.env)
    cmd = " ".join(shlex.quote(a) for a in job.argv)
    log = shlex.quote(job.log)
    if script:
        # An exported script has no flowsh to hold its output back: the full output goes
        # to the log; cron gets (and mails) its tail only on a failure. 75 is flock's
        # "another run holds the lock": a skip, silent.
        # umask 077 in a subshell: the log (step output) and its directory are the user's
        # alone, as flowsh's own --log is, while the script keeps cron's umask for the
        # files its steps write (the same workflow behaves the same).
        dirs = dict.fromkeys(str(Path(p).parent) for p in (job.log, job.lock) if p)
        mkdir = ("(umask 077 && mkdir -p " + " ".join(shlex.quote(d) for d in dirs)
                 + f" && : >>{log})")
        line = (f"cd {shlex.quote(job.cwd)} && {mkdir} && {assigns} {cmd} >>{log} 2>&1"
                f" || {{ rc=$?; [ $rc -eq 75 ] || tail -n 100 {log}; exit $rc; }}")
    else:
        line = f"cd {shlex.quote(job.cwd)} && {assigns} {cmd} --quiet-on-success --log {log}"
    # cron turns an unescaped % into a newline.
    return line.replace("%", "\\%")


def render_crontab(
    wf: Workflow,
    exprs: list[str] | None = None,
    *,
    script: str | None = None,
    restore_tz: str = "",
    path: str | None = None,
) -> str:
    """The marked crontab block for `wf` (BEGIN/END flowsh:IDENTITY comment lines)."""
    from flowsh.cron import extensions, parse
    from flowsh.export import environment

    texts = list(exprs) if exprs else list(wf.schedule)
    if not texts:
        raise UsageError(f"{wf.path}: no `schedule` in the workflow; give one with --cron EXPR")
    entries = []
    for i, text in enumerate(texts):
        try:
            sched = parse(text)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if sched.has_seconds:
            raise UsageError(
                f"{text!r}: cron has no seconds field; use `flowsh scheduler run` or --systemd"
            )
        if extensions(sched):
            # cron's own fields have no L, W or #: the line would never fire as meant.
            key = ("--cron" if exprs else
                   f"key {'schedule' if len(texts) == 1 else f'schedule.{i}'!r}")
            raise UsageError(f"{wf.path}: {key}: {text!r} uses L, W or # (croniter's "
                             "extensions, not cron's): cron cannot read it in a crontab "
                             "line; use `flowsh scheduler run`, or write it with cron's fields")
        entries.append({"expr": sched.expr, "tz": sched.tz})
    job = scheduled_job(wf, script=script, path=path, exprs=exprs)
    # A crontab entry is one line: no quoting carries a newline through it (cron would
    # read the rest as a new, broken entry, and `crontab` refuses the whole table).
    for value in (job.source, job.cwd, job.log, *job.argv, *(v for _, v in job.env)):
        if "\n" in value or "\r" in value:
            raise UsageError(f"{value!r}: a path with a line break cannot go in a crontab "
                             "line; move or rename it")
    text_out: str = environment().get_template("crontab.j2").render(
        name=job.name, source=job.source, entries=entries,
        command=_cron_command(job, script=script is not None),
        restore_tz=restore_tz,
    )
    return text_out


def unit_name(name: str) -> str:
    return f"flowsh-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}"


def render_systemd(
    wf: Workflow, exprs: list[str] | None = None, *, script: str | None = None,
    path: str | None = None,
) -> dict[str, str]:
    """{file name: text} for the user units `flowsh-IDENTITY.service` and `.timer`."""
    from flowsh.export import environment, on_calendar, systemd_quote

    texts = list(exprs) if exprs else list(wf.schedule)
    if not texts:
        raise UsageError(f"{wf.path}: no `schedule` in the workflow; give one with --cron EXPR")
    calendars = [{"text": t, "value": v} for t in texts for v in on_calendar(t)]
    job = scheduled_job(wf, script=script, path=path, exprs=exprs)
    # A unit's directive is one line, as a crontab entry is: the rest of a path with a line
    # break would be read as a directive of its own (ExecStartPre=...).
    for value in (job.source, job.cwd, *job.argv, *(v for _, v in job.env)):
        if "\n" in value or "\r" in value:
            raise UsageError(f"{value!r}: a path with a line break cannot go in a systemd "
                             "unit; move or rename it")
    if script is None:
        job.argv.append("--quiet")  # the journal keeps what it prints; nobody is mailed
    env = environment()
    env.filters["sdq"] = systemd_quote
    unit = unit_name(job.name)
    common = {"name": job.name, "source": job.source, "unit": unit}
    service = env.get_template("systemd/flowsh.service.j2").render(
        **common, cwd=systemd_quote(job.cwd), env=job.env,
        exec_start=" ".join(systemd_quote(a) for a in job.argv),
        # Not under flock(1): it passes no signal on, so the script would get only the KILL.
        kill_mixed=script is None,
    )
    timer = env.get_template("systemd/flowsh.timer.j2").render(**common, calendars=calendars)
    return {f"{unit}.service": service, f"{unit}.timer": timer}
