"""The ``flowsh`` command: a thin typer app over the library.

Sub-commands are plugins (``flowsh_register_commands``), built-in ones included. This is
the only place where a `FlowshError` becomes a message on stderr and an exit code.
"""

from __future__ import annotations

import os
import sys

import typer

from flowsh import __version__, plugins
from flowsh.errors import EXIT_FAILED, EXIT_INTERRUPTED, FlowshError
from flowsh.helptext import FlowshGroup

app = typer.Typer(
    name="flowsh",
    cls=FlowshGroup,  # help names arguments as users write them (FILE, KEY=VALUE)
    help="Run shell steps as workflows: dependency order, checkpoints, resume, retries, "
    "timeouts, logs, metrics, alerts, cron.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"flowsh {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """flowsh: workflows for people whose work lives in shell."""


_loaded = False


def build_app() -> typer.Typer:
    global _loaded
    if not _loaded:
        plugins.emit("flowsh_register_commands", app=app)
        # pluggy calls the last registered plugin first; help lists built-ins first.
        app.registered_commands.sort(key=_rank)
        app.registered_groups.sort(key=_rank)
        _loaded = True
    return app


def _rank(info: typer.models.CommandInfo | typer.models.TyperInfo) -> int:
    """Registration order of the plugin that defined a command or a command group."""
    inner = getattr(info, "typer_instance", None)
    if inner is None:
        callback = info.callback
    else:  # a group: its callback, or its first command
        first = inner.registered_callback or next(iter(inner.registered_commands), None)
        callback = first.callback if first else None
    return plugins.registration_rank(getattr(callback, "__module__", None) or "")


def error(message: str, code: int) -> None:
    sys.stderr.write(f"flowsh: error: {message}\n")
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> None:
    try:
        build_app()(args=argv, prog_name="flowsh")
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
