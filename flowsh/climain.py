"""The typer-free half of the command line: how errors end the process, and `flowsh run`
without typer.

`flowsh run FILE [KEY=VALUE...]` with plainly valid options is parsed here, against
`RUN_OPTIONS`, and handed to `runcmd.run_command` with exactly the arguments typer would
pass (tests/unit/test_climain.py checks the table against typer's own `run` command and the
arguments over a corpus of command lines). Anything else (help, an unknown, repeated or
malformed option, a value typer would have to convert or refuse, completion, FLOWSH_DEBUG,
FLOWSH_TRACE_PLUGINS, a third-party plugin that adds or wraps commands) returns `False`
before anything ran, and typer parses as ever: its messages stay its own. Measured:
typer's import, its command tree and its conversion were ~20 ms of CPU of a 1-step run's
~115.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO, cast

from flowsh.errors import EXIT_FAILED, EXIT_INTERRUPTED, FlowshError

# `flowsh run`'s options: each name -> (its parameter, its kind). kind: "flag" (True when
# given), "str", "int", "path" (a `Path`), "list" (repeatable, values in order).
RUN_OPTIONS: dict[str, tuple[str, str]] = {
    "-j": ("jobs", "int"), "--jobs": ("jobs", "int"),
    "--dry-run": ("dry_run", "flag"), "-n": ("dry_run", "flag"),
    "--resume": ("resume", "flag"),
    "--quiet": ("quiet", "flag"), "-q": ("quiet", "flag"),
    "--json": ("json_events", "flag"),
    "--state": ("state", "str"),
    "--overlap": ("overlap", "str"),
    "--lock-timeout": ("lock_timeout", "str"),
    "--metrics-push": ("metrics_push", "str"),
    "--executor": ("executor", "str"),
    "--quiet-on-success": ("quiet_on_success", "flag"),
    "--skip-quietly": ("skip_quietly", "flag"),
    "--log": ("log", "path"),
    "--only": ("only", "list"),
    "--from": ("from_", "str"),
    "--until": ("until", "str"),
    "--scheduled": ("scheduled", "flag"),
    "--scheduled-time": ("scheduled_time", "str"),
    "--scheduled-cron": ("scheduled_cron", "list"),
    "--force": ("force", "flag"),
    "--force-step": ("force_step", "list"),
}
# Options read from the environment when not given (click: a set, non-empty variable).
RUN_ENVVARS = {"state": "FLOWSH_STATE"}
# The arguments: FILE, then KEY=VALUE...
RUN_ARGUMENTS = ("file", "params")

# Where typer's shell completion is asked for (click: _{PROG_NAME}_COMPLETE).
_COMPLETE_VAR = "_FLOWSH_COMPLETE"


def _int(value: str) -> int | None:
    # What typer takes without asking pydantic (cliparams._INT); anything else: typer.
    if 1 <= len(value) <= 18 and value.isascii() and value.isdigit():
        return int(value)
    return None


def parse_run(args: list[str], environ: Any = os.environ) -> dict[str, Any] | None:
    """The keyword arguments typer would call `run` with for `flowsh run ARGS`, or None
    when this parser leaves `args` to typer."""
    kinds = {param: kind for param, kind in RUN_OPTIONS.values()}
    got: dict[str, Any] = {}
    positional: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("-"):
            positional.append(arg)
            continue
        value: str | None = None
        if arg.startswith("--"):
            name, eq, rest = arg.partition("=")
            if eq:
                value = rest
        elif arg in RUN_OPTIONS:
            name = arg
        else:  # "-j8"; anything else ("-", "-qn", "-x") goes to typer
            name, value = arg[:2], arg[2:]
            if name != "-j":
                return None
        if name not in RUN_OPTIONS:
            return None  # "--", "--help", "-h", an unknown option
        param, kind = RUN_OPTIONS[name]
        if kind == "flag":
            if value is not None or param in got:
                return None
            got[param] = True
            continue
        if value is None:
            if i == len(args) or args[i].startswith("-"):
                return None
            value = args[i]
            i += 1
        if not value:
            return None
        if kind == "list":
            got.setdefault(param, []).append(value)
            continue
        if param in got:
            return None  # typer keeps the last; not worth a difference
        if kind == "int":
            number = _int(value)
            if number is None:
                return None
            got[param] = number
        elif kind == "path":
            got[param] = Path(value)
        else:
            got[param] = value
    if not positional or not positional[0]:
        return None
    for param, var in RUN_ENVVARS.items():
        if param not in got and environ.get(var):
            got[param] = environ[var]
    out: dict[str, Any] = {"file": Path(positional[0]), "params": positional[1:] or None}
    for param, kind in kinds.items():
        out[param] = got.get(param, False if kind == "flag" else None)
    return out


def run_fast(args: list[str]) -> bool:
    """`flowsh run ARGS` without typer, when `parse_run` takes ARGS: ends the process.
    False, having run nothing, when typer is to parse them."""
    # FLOWSH_TRACE_PLUGINS: typer's door calls (and traces) flowsh_register_commands.
    if _COMPLETE_VAR in os.environ or os.environ.get("FLOWSH_DEBUG") \
            or os.environ.get("FLOWSH_TRACE_PLUGINS") == "1":
        return False
    kwargs = parse_run(args)
    if kwargs is None:
        return False
    import gc

    # What every run imports (the plugin manager, and what `runcmd._run` imports first),
    # imported with the cycle collector paused and then frozen, as __main__ does for
    # typer's imports: the collections meanwhile find nothing.
    gc.disable()
    try:
        import flowsh.checks
        import flowsh.engine
        import flowsh.loader
        import flowsh.plugins
        import flowsh.runcmd
        import flowsh.steps  # noqa: F401
    finally:
        gc.freeze()
        gc.enable()
    with cli_errors():
        from flowsh.plugins import builtin_only

        if not builtin_only("run", "flowsh.commands.core"):
            return False
        code = as_typer_would(kwargs)
    raise SystemExit(code)


def as_typer_would(kwargs: dict[str, Any]) -> int:
    """`runcmd.run_command(**kwargs)` under what typer's `_main` does around a command: its
    exit code, or the exit typer makes of Ctrl-C, end of input and a closed pipe."""
    from flowsh.runcmd import run_command

    try:
        code = run_command(**kwargs)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED  # typer: Exit(130), nothing printed
    except EOFError:
        sys.stderr.write("\nAborted!\n")
        sys.stderr.flush()
        return 1
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            raise
        # The reader left: Python's last flush at exit must not fail again.
        sys.stdout = cast(TextIO, _Pacified(sys.stdout))
        sys.stderr = cast(TextIO, _Pacified(sys.stderr))
        return 1
    return 0 if code is None else code


class _Pacified:
    """click's PacifyFlushWrapper: a stream whose flush ignores a closed pipe."""

    def __init__(self, wrapped: TextIO) -> None:
        self.wrapped = wrapped

    def flush(self) -> None:
        try:
            self.wrapped.flush()
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.wrapped, attr)


def error(message: str, code: int) -> None:
    sys.stderr.write(f"flowsh: error: {message}\n")
    raise SystemExit(code)


@contextmanager
def cli_errors() -> Iterator[None]:
    """The only place where a `FlowshError` becomes a message on stderr and an exit code."""
    try:
        yield
    except FlowshError as exc:
        hint = f" ({exc.hint})" if exc.hint else ""
        if os.environ.get("FLOWSH_DEBUG"):
            raise
        error(f"{exc}{hint}", exc.exit_code)
    except OSError as exc:
        # An OS error nothing above expected (a directory where a file was asked for...):
        # still one line, naming the file.
        where = f"{exc.filename}: " if exc.filename else ""
        error(f"{where}{exc.strerror or exc}", EXIT_FAILED)
    except KeyboardInterrupt:
        # Ctrl-C twice during a run (the run is recorded as interrupted), or at start-up.
        error("interrupted", EXIT_INTERRUPTED)
    except BrokenPipeError:
        # `flowsh history | head`: the reader left; not an error of ours.
        sys.stderr.close()
        raise SystemExit(EXIT_FAILED) from None
