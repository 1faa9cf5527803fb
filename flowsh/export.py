"""Exports: a workflow rendered as a standalone bash script, crontab lines or systemd units.

Templates live in the top-level `templates/` directory, shipped as the package
`flowsh.templates`. Every value that reaches a template as shell text goes through
`bash_quote`; parameters are never spliced into commands, they travel as variables.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowsh.bashguard import XTRACE_ON
from flowsh.config import load_user_config
from flowsh.cron import parse
from flowsh.embed import embed, mirror_word
from flowsh.errors import UsageError
from flowsh.exportlib import eval_script, guard, step_prelude
from flowsh.graph import Graph
from flowsh.model import (
    IDENT,
    SECRET_NAME,
    ForeachCommand,
    ForeachFile,
    ForeachOutput,
    Step,
    Workflow,
    definition_json,
)
from flowsh.notify import SEVERITIES, channel_config, channels_for, effective_notify, events_of
from flowsh.paths import resolve_path, step_cwd
from flowsh.quoting import bash_quote, quote_name
from flowsh.slot import bash_schedules
from flowsh.steps import POSIX_SHELLS, describe_plan, shell_name
from flowsh.templating import templates_dir
from flowsh.uptodate import export_context
from flowsh.yamlsrc import Positions


def seconds(value: float | None) -> str:
    """`0.2`, `90`: a duration as timeout(1) and sleep(1) read it ('0' = none)."""
    if not value:
        return "0"
    # A positive duration never rounds to "0", which timeout(1) reads as "no limit".
    return f"{max(value, 0.001):.3f}".rstrip("0").rstrip(".")


def environment() -> Any:
    import jinja2

    root = templates_dir()
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
        # bash's ${#var} would open a jinja comment.
        comment_start_string="{#jinja",
        comment_end_string="jinja#}",
    )
    env.filters["q"] = bash_quote
    env.filters["qn"] = quote_name
    return env


def base_dir(wf: Workflow) -> Path:
    """Where steps run: the workflow file's directory, then the workflow's `workdir`."""
    root = Path(wf.path).parent if wf.path else Path.cwd()
    return (root / wf.workdir) if wf.workdir else root


def _comment(text: str) -> str:
    """`text` safe in a `#` comment of the script: a line break there would end the comment
    and make the rest code (a file named with one, an exporter option)."""
    return "".join(c if c.isprintable() else "?" for c in text)


def _codes(codes: list[int] | None) -> str:
    """`,3,75,` for the script's `*",$rc,"*` test; `*` when absent (any code)."""
    return "*" if codes is None else "," + ",".join(map(str, codes)) + ","


def step_dir(wf: Workflow, step: Step) -> Path:
    base = base_dir(wf)
    return (base / step.workdir) if step.workdir else base


def script_identity(wf: Workflow, extra: str = "") -> str:
    """What an exported script's checkpoint is valid for: the definition and the embedded
    files (sha256 in full, unlike a run record's short `definition_hash`)."""
    text = definition_json(wf) + extra
    return hashlib.sha256(text.encode()).hexdigest()


# Names the exported script cannot hand to a step (REFUSE-6): bash keeps them readonly
# (UID, EUID, PPID, BASHOPTS, SHELLOPTS), ignores an assignment to them (GROUPS, FUNCNAME,
# PIPESTATUS, DIRSTACK, BASHPID, HISTCMD, LINENO) or gives them a value of its own each time
# they are read (RANDOM, SRANDOM, SECONDS, EPOCHSECONDS, EPOCHREALTIME); BASH_* are bash's own
# (BASH_ENV, BASH_XTRACEFD... change the shell that reads them), and __flowsh* are the guard's
# names inside a step. flowsh run hands them to the step's environment as they are; REPLY,
# IFS, FUNCNEST, OPTIND, OPTARG, PATH... are carried by both runtimes (the script sets them
# in the step's process only, never in its own shell).
UNCARRIED = re.compile(
    r"(?:UID|EUID|PPID|GROUPS|LINENO|FUNCNAME|PIPESTATUS|DIRSTACK|BASHOPTS|SHELLOPTS|BASHPID"
    r"|RANDOM|SRANDOM|SECONDS|EPOCHSECONDS|EPOCHREALTIME|HISTCMD|BASH_\w*|__flowsh\w*)\Z")


def _check_names(wf: Workflow) -> None:
    """REFUSE-6: a param or env name the script cannot carry, FILE:LINE naming the key."""
    text = None
    if wf.path and Path(wf.path).suffix.lower() in (".yaml", ".yml", ".json"):
        try:
            text = Path(wf.path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            text = None
    places: list[tuple[str, tuple[str | int, ...]]] = [
        *((k, ("params", k)) for k in (*wf.params, *getattr(wf, "required_params", ()))),
        *((k, ("env", k)) for k in wf.env),
        *((k, ("steps", i, "env", k)) for i, s in enumerate(wf.steps) for k in s.env),
    ]
    for name, loc in places:
        if UNCARRIED.match(name):
            what = ".".join(str(x) for x in loc)
            raise Positions(Path(wf.path) if wf.path else None, text).error(
                f"key {what!r}: the exported script cannot hand {name} to a step (bash keeps "
                "it for itself: readonly, special or bash's own); rename it", loc, key=True)


def _refuse_calls(wf: Workflow) -> None:
    """CALL-7: a `call:` step, FILE:LINE naming the step."""
    for i, step in enumerate(wf.steps):
        if step.call is None:
            continue
        text = None
        with contextlib.suppress(OSError, UnicodeDecodeError, TypeError):
            text = Path(wf.path).read_text(encoding="utf-8")  # type: ignore[arg-type]
        raise Positions(Path(wf.path) if wf.path else None, text).error(
            f"step {step.name!r}: key 'call': the exported script cannot run another "
            "workflow; export the child and call its script from a run: step",
            ("steps", i, "call"))


def _foreach(wf: Workflow, step: Step) -> dict[str, Any] | None:
    """How the script expands a `foreach:` step's items (FOREACH-2, FOREACH-10): a literal
    list is quoted data; a file, command or output name is read when the step is ready."""
    source = step.foreach
    if source is None:
        return None
    ctx: dict[str, Any] = {"kind": "list", "arg": "", "items": [],
                           "limit": min(step.max_parallel or wf.concurrency, wf.concurrency),
                           # As flowsh run: the step's own shell, else bash (not the workflow's).
                           "shell": [bash_quote(a) for a in shlex.split(step.shell or "bash")]}
    if isinstance(source, list):
        ctx["items"] = [bash_quote(str(i)) for i in source]
    elif isinstance(source, ForeachFile):
        ctx.update(kind="file", arg=source.file)
    elif isinstance(source, ForeachCommand):
        ctx.update(kind="command", arg=source.command)
    else:
        assert isinstance(source, ForeachOutput)
        ctx.update(kind="output", arg=source.output)
    return ctx


def check_exportable(wf: Workflow) -> None:
    """What the exported script cannot honour is refused here (docs/semantics.md, REFUSE-1,
    REFUSE-2 and REFUSE-6), never exported to behave some other way. FLOWSH_* names are
    refused for every runtime by the model."""
    # The file's name goes into the script's comments and its FLOWSH_SOURCE_FILE: a line
    # break there would end a comment and run the rest as code.
    if wf.path and re.search(r"[\x00-\x1f\x7f]", str(wf.path)):
        raise UsageError(f"{str(wf.path)!r}: a workflow path with a control character (a "
                         "line break...) cannot be named in an exported script; rename it")
    _check_names(wf)
    _refuse_calls(wf)

    # `state` from the user config is flowsh's own store, not a key of this file.
    if wf.state and wf.state != load_user_config().get("state"):
        raise UsageError(f"{wf.path}: key 'state': the exported script keeps its state in "
                         "its own checkpoint; remove `state` to export this workflow")
    if wf.executor != "local" or wf.executor_options:
        key = "executor" if wf.executor != "local" else "executor_options"
        raise UsageError(f"{wf.path}: key {key!r}: the exported script runs its steps "
                         "locally; remove it to export this workflow")
    if wf.catchup is not None and wf.catchup.policy != "none":
        raise UsageError(f"{wf.path}: key 'catchup': the exported script keeps no history "
                         "of the slots it ran, so it cannot make up missed ones (CATCHUP-6); "
                         "remove `catchup` (or set policy: none) to export this workflow")
    _refuse_cron_extensions(wf)
    if wf.deadline:
        raise UsageError(f"{wf.path}: key 'deadline': the exported script has no timer to "
                         "fire `run_late` while it runs (DEADLINE-6); remove `deadline` to "
                         "export this workflow, or run it with `flowsh run`")
    # A command channel's `env` would be written into the script's text (REFUSE-3's rule
    # for secrets): a secret-looking one must come from the script's environment instead.
    secret = wf.secret_names()
    for chan in _channels(wf)[0]:
        for name in chan["env"]:
            if name in secret or SECRET_NAME.search(name):
                raise UsageError(
                    f"{wf.path}: key 'notify.channels.{chan['name']}.env.{name}': a secret "
                    "would be written into the exported script's text; remove it and export "
                    f"{name} in the script's environment (the channel's command sees it)")


# Where a library's text gives a variable a literal value: `NAME=value` or `NAME+=value`
# anywhere a command can start (after `export`/`declare -x`..., `;`, `&&`, a `case` pattern's
# `)`...), and the default forms `${NAME:-value}`, `${NAME-value}`, `${NAME:=value}`,
# `${NAME=value}`.
_ASSIGN = re.compile(r"(?:^|[\s;&|(){}`])(?:(?:export|readonly|declare|typeset|local)"
                     r"(?:\s+-\w+)*\s+)?([A-Za-z_][A-Za-z0-9_]*)\+?=(.*)")
_DEFAULT = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?[-=](.*)")


def _literal(value: str) -> bool:
    """Whether an assigned or default value written in the text holds literal characters
    (not only another variable's value, nothing, or the end of the command)."""
    value = value.strip().lstrip("\"'")
    return bool(value) and not value.startswith(("$", "#", ";", ")", "}", "&", "|"))


def _refuse_embedded_secrets(fs: _Files, secret: set[str]) -> None:
    """SECRET-2 / REFUSE-3: an `--inline` script holds its libraries' text; one that gives a
    secret-looking variable a literal value (assigned, appended or as a default) would put
    that value in the script."""
    def secretish(name: str) -> bool:
        return name in secret or bool(SECRET_NAME.search(name))

    for item in fs.items:
        for lineno, line in enumerate(item["content"].split("\n"), 1):
            found = [m for m in (*_ASSIGN.finditer(line), *_DEFAULT.finditer(line))
                     if secretish(m.group(1)) and _literal(m.group(2))]
            if found:
                raise UsageError(
                    f"{item['origin']}:{lineno}: {found[0].group(1)}: a secret's value would "
                    "be written into the --inline script's text (SECRET-2); set it in the "
                    "script's environment (or an env_file), or export without --inline")


@dataclass
class _Files:
    """Scripts and libraries the steps use: embedded (inline) or by absolute path.

    Embedded files are written under the run directory at ``root/`` + their original
    absolute path, so each keeps its own name (``$0``, ``BASH_SOURCE``) and the files it
    sources by a path relative to itself are where it looks for them (flowsh.embed).
    """

    inline: bool
    items: list[dict[str, str]] = field(default_factory=list)
    by_path: dict[str, str] = field(default_factory=dict)

    def ref(self, path: Path, cwd: Path | None = None) -> str:
        """A bash word naming the file at run time."""
        key = str(path.resolve())
        if not self.inline:
            return bash_quote(key)
        if key not in self.by_path:
            self.by_path[key] = mirror_word(key)
            for item in embed(Path(key), cwd or Path(key).parent, self.by_path):
                self.items.append(item)
        return self.by_path[key]


def _func_names(steps: list[Step]) -> dict[str, str]:
    out: dict[str, str] = {}
    used: set[str] = set()
    for step in steps:
        base = "step_" + re.sub(r"[^A-Za-z0-9_]", "_", step.name)
        name, n = base, 2
        while name in used:
            name, n = f"{base}_{n}", n + 1
        used.add(name)
        out[step.name] = name
    return out


def _expand(p: str) -> str:
    return os.path.expandvars(os.path.expanduser(p))


def _step_context(
    wf: Workflow, step: Step, index: int, func: str, fs: _Files, libsets: list[list[str]],
    libdirs: list[str],
) -> dict[str, Any]:
    shell = shlex.split(step.shell or wf.shell)
    fallback = ""
    libset = -1
    if_ = step.if_
    cwd = step_cwd(wf, step)
    if step.script is not None:
        # As the engine: an executable script runs itself, any other goes to the shell.
        path = resolve_path(wf, step.script, cwd)
        argv = [fs.ref(path, cwd), *(bash_quote(a) for a in step.args)]
        fallback = " ".join(bash_quote(a) for a in shell)
    elif shell_name(shell) not in POSIX_SHELLS:
        argv = [*(bash_quote(a) for a in shell), "-c", bash_quote(step.run or "")]
    else:
        prelude = []
        refs = [fs.ref(resolve_path(wf, src), cwd) for src in (*wf.source, *step.source)]
        if refs and shell_name(shell) == "bash":
            if refs not in libsets:
                libsets.append(refs)
                # Evaluated once, in the working directory of the first step using them.
                libdirs.append(_expand(step.workdir) if step.workdir else ".")
            libset = libsets.index(refs)
            prelude.append(step_prelude(refs))
            if if_ is not None:
                # The test sees the libraries as the step does (IF-1, ENV-1).
                if_ = step_prelude(refs) + "\n" + XTRACE_ON + "\n" + if_
        else:
            for ref in refs:
                shown = ref.replace("'", "").replace('"', "")
                prelude.append(f". {ref} || {{ echo {bash_quote('flowsh: cannot source ' + shown)} "
                               ">&2; exit 2; }")
        if wf.strict:
            name = shell_name(shell)
            prelude.append("set -eo pipefail" if name in ("bash", "zsh", "ksh") else "set -e")
        if refs and shell_name(shell) == "bash":
            prelude.append(XTRACE_ON)
        text = "\n".join([*prelude, step.run or ""])
        argv = [*(bash_quote(a) for a in shell), "-c", bash_quote(text),
                bash_quote(f"flowsh:{step.name}")]
    timeout = seconds(step.timeout)
    policy = " ".join(
        str(x)
        for x in (
            step.retry_count,
            round((step.retry_delay or 0) * 1000),
            round((step.backoff or 1) * 1000),
            round((step.max_delay or 0) * 1000),
            round((step.jitter or 0) * 1000),
            timeout,
            int(step.always),
            int(step.continue_on_failure),
            int(step.keep_children),
            _codes(step.retry_on),
            _codes(step.skip_on) if step.skip_on else "-",
            _codes(step.success_on) if step.success_on else "-",
        )
    )
    return {
        "name": step.name,
        "index": index,
        "func": func,
        "description": step.description,
        "needs": list(step.needs or ()),
        # A secret-named value is read at run time, with the workflow's (bash_context).
        "env": {k: v for k, v in step.env.items() if not _secret(wf, k)},
        "secret_env": [k for k in step.env if _secret(wf, k)],
        "libset": libset,
        "argv": argv,
        "shell": [bash_quote(a) for a in shell],
        "fallback": fallback,
        "policy": policy,
        "if_": if_,
        "workdir": _expand(step.workdir) if step.workdir else ".",
        "foreach": _foreach(wf, step),
    }


def _secret(wf: Workflow, name: str) -> bool:
    return bool(SECRET_NAME.search(name)) or name in wf.secrets


def _channels(wf: Workflow) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """Routes and channels as flowsh's alerting reads them (user config merged in)."""
    notify = effective_notify(wf)
    chans: dict[str, dict[str, Any]] = {}
    routes: dict[str, list[dict[str, Any]]] = {}
    for sev in SEVERITIES:
        for name in channels_for(notify, sev):
            if name not in chans:
                cfg = channel_config(notify, name)
                env = cfg.get("env") or {}
                chans[name] = {
                    "name": name,
                    "type": str(cfg.get("type")),
                    "run": str(cfg.get("run") or ""),
                    "shell": str(cfg.get("shell") or "bash"),
                    "env": {str(k): str(v) for k, v in env.items() if IDENT.match(str(k))},
                    "path": str(cfg.get("path") or ""),
                    "timeout": seconds(float(cfg.get("timeout") or 10)),
                    "func": f"flowsh_channel_{len(chans) + 1}",
                }
            routes.setdefault(sev, []).append(chans[name])
    return list(chans.values()), routes


def bash_context(
    wf: Workflow, *, inline: bool = False, script_name: str | None = None
) -> dict[str, Any]:
    from flowsh import __version__
    check_exportable(wf)
    graph = Graph.build(wf)
    funcs = _func_names(wf.steps)
    fs = _Files(inline=inline)
    by_name = {s.name: (i, s) for i, s in enumerate(wf.steps)}
    libsets: list[list[str]] = []
    libdirs: list[str] = []
    steps = [
        _step_context(wf, by_name[n][1], by_name[n][0], funcs[n], fs, libsets, libdirs)
        for n in graph.order
    ]
    _refuse_embedded_secrets(fs, wf.secret_names())
    channels, routes = _channels(wf)
    plan = "\n".join(describe_plan(wf))
    mon = wf.monitor
    source_name = _comment(Path(wf.path).name if wf.path else f"{wf.name}.yaml")
    embedded = "".join(f["origin"] + "\0" + f["content"] for f in fs.items)
    secrets = wf.secret_names()
    # Declared without a default: None in `params`, or listed apart (`required_params`).
    params: dict[str, str | None] = {
        **wf.params, **dict.fromkeys(getattr(wf, "required_params", ()))}
    return {
        "wf": wf,
        # The workflow's identity where the model has one (rule 7), else its name.
        "identity": str(getattr(wf, "identity", wf.name)),
        "version": __version__,
        "source_name": source_name,
        "script_name": _comment(script_name or f"{wf.name}.sh"),
        "definition": script_identity(wf, embedded),
        "inline": inline,
        "files": fs.items,
        "steps": steps,
        "plan": plan,
        "file_order": [s.name for s in wf.steps],
        "params": params,
        # Never in the script's text: read at run time (docs/export.md#secrets).
        "defaults": {k: v for k, v in params.items() if v is not None and k not in secrets},
        "secret_params": [k for k, v in params.items() if v is not None and k in secrets],
        "required": [k for k, v in params.items() if v is None],
        "secrets": sorted(secrets),
        "secret_pattern": SECRET_NAME.pattern,
        # The same names, refused in the env_file and as outputs when the script runs.
        "uncarried_pattern": "^" + UNCARRIED.pattern.replace("(?:", "(").replace(
            "\\w", "[A-Za-z0-9_]")[:-2] + "$",
        "wf_env": {k: v for k, v in wf.env.items() if k not in secrets},
        "secret_env": list(dict.fromkeys(
            [*(k for k in wf.env if k in secrets), *(k for s in steps for k in s["secret_env"])]
        )),
        "library_evals": [eval_script(refs) for refs in libsets],
        "library_dirs": libdirs,
        "guard": guard() if libsets else "",
        "lock_timeout": str(math.ceil(wf.lock_timeout)) if wf.lock_timeout else "",
        "kill_grace": seconds(wf.kill_grace) if wf.kill_grace else "0.1",
        # Polls of 50 ms while stopping a step's leftovers, before KILL.
        "grace_ticks": max(2, math.ceil((wf.kill_grace or 0.1) * 20)),
        "csv": _monitor_value(mon.csv),
        "prometheus": _monitor_value(mon.prometheus),
        "env_file": _expand(wf.env_file) if wf.env_file else "",
        "workdir": _expand(wf.workdir) if wf.workdir else "",
        "channels": channels,
        "routes": routes,
        "events": events_of(effective_notify(wf)),
        "delegated": sorted(c["name"] for c in channels if c["type"] not in ("log", "command")),
        # `--scheduled`: the slot from the schedule's expanded fields (SLOT-1).
        "schedules": bash_schedules(list(wf.schedule)),
        "uptodate": export_context(wf, steps, libsets, inline=inline),
    }


def _monitor_value(value: bool | str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def render_bash(wf: Workflow, *, inline: bool = False, script_name: str | None = None) -> str:
    """The standalone bash script for `wf` (see docs/export.md)."""
    ctx = bash_context(wf, inline=inline, script_name=script_name)
    text: str = environment().get_template("bash/script.sh.j2").render(**ctx)
    return text


# --- crontab and systemd -------------------------------------------------------------------

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def flowsh_argv() -> list[str]:
    """How cron or systemd calls this flowsh: the `flowsh` beside this interpreter."""
    import sys

    exe = Path(sys.executable).parent / "flowsh"  # not resolved: keep a venv's bin/
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "flowsh"]


def systemd_quote(value: str) -> str:
    """A systemd unit-file word: %% and $$ escaped, double quotes when needed."""
    value = value.replace("%", "%%").replace("$", "$$")
    if value and re.fullmatch(r"[A-Za-z0-9_./:@+,=-]+", value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


_DOW = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]


def _refuse_cron_extensions(wf: Workflow) -> None:
    """The script's --scheduled reads cron's fields (runtime.sh.j2 flowsh_latest_slot): a
    `5#2` (second Friday) read there as every Friday would give the run another slot."""
    from flowsh.cron import extensions

    for i, text in enumerate(wf.schedule):
        if extensions(parse(text)):
            key = "schedule" if len(wf.schedule) == 1 else f"schedule.{i}"
            raise UsageError(f"{wf.path}: key {key!r}: {text!r} uses L, W or # (croniter's "
                             "extensions, not cron's): the exported script cannot compute "
                             "its slots; write it with cron's fields to export this workflow")


def on_calendar(text: str) -> list[str]:
    """systemd OnCalendar= values equivalent to one cron expression.

    Cron fires when day-of-month OR day-of-week matches (both restricted); systemd ANDs
    them, so that case becomes two values.
    """
    from croniter import croniter

    try:
        sched = parse(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    fields, nth_weekday = croniter.expand(sched.expr)
    # `L`, `1#2` (the second Monday: croniter's second value) and `1W` (the weekday
    # nearest the 1st) have no OnCalendar= form; croniter expands `W` to the day alone.
    if nth_weekday or re.search(r"\dW|W\d|LW", sched.expr) or any(
            isinstance(v, str) and v != "*" for f in fields for v in f):
        raise UsageError(f"{text!r}: L, W and # cron features have no systemd equivalent")

    def part(values: list[Any], width: int = 2) -> str:
        if values == ["*"]:
            return "*"
        return ",".join(f"{int(v):0{width}d}" for v in values)

    minute, hour, dom, month, dow = fields[:5]
    sec = part(fields[5]) if len(fields) == 6 else "00"
    time = f"{part(hour)}:{part(minute)}:{sec}"
    days = "" if dow == ["*"] else ",".join(dict.fromkeys(_DOW[int(d)] for d in dow)) + " "
    zone = f" {sched.tz}" if sched.tz else ""
    if dom != ["*"] and dow != ["*"]:
        return [
            f"*-{part(month)}-{part(dom)} {time}{zone}",
            f"{days}*-{part(month)}-* {time}{zone}",
        ]
    return [f"{days}*-{part(month)}-{part(dom)} {time}{zone}"]

