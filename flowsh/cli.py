"""The ``flowsh`` command: a thin typer app over the library.

Sub-commands are plugins (``flowsh_register_commands``), built-in ones included. Errors
become a message on stderr and an exit code in `climain.cli_errors`, which a plain
`flowsh run` (climain.py) reaches without typer.
"""

from __future__ import annotations

import sys

import typer

from flowsh import __version__, plugins
from flowsh.climain import cli_errors
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


_ALL = "\0all"
_loaded: str | None = None  # the command the app was built for; _ALL: every command


def build_app(command: str | None = None) -> typer.Typer:
    """The app with every command, or with those a run of `flowsh COMMAND` can reach
    (``command``'s own module and any third-party plugin's: see `plugins.register_commands`).
    Built again when a later call in the same process (a test, an embedding program) asks
    for another command."""
    global _loaded
    want = command or _ALL
    if _loaded != want and _loaded != _ALL:
        app.registered_commands.clear()
        app.registered_groups.clear()
        plugins.register_commands(app, command)
        # pluggy calls the last registered plugin first; help lists built-ins first.
        app.registered_commands.sort(key=_rank)
        app.registered_groups.sort(key=_rank)
        if command is not None:
            _only(command)
        _loaded = want
    return app


def _only(command: str) -> None:
    """Keep just what `flowsh COMMAND` runs, when it is registered under that name: typer
    turns every registered command into a click one at each start (argument types, help),
    and a command module defines up to 7 (`run` and its siblings). Nameless registrations
    (named by typer after their function) are kept. A name nothing registers keeps them
    all, so "No such command" and its suggestion are what they were."""
    def wanted(name: str | None) -> bool:
        return name is None or name == command

    if not (any(i.name == command for i in app.registered_commands)
            or any(i.name == command for i in app.registered_groups)):
        return
    app.registered_commands[:] = [i for i in app.registered_commands if wanted(i.name)]
    app.registered_groups[:] = [i for i in app.registered_groups if wanted(i.name)]


def _rank(info: typer.models.CommandInfo | typer.models.TyperInfo) -> int:
    """Registration order of the plugin that defined a command or a command group."""
    inner = getattr(info, "typer_instance", None)
    if inner is None:
        callback = info.callback
    else:  # a group: its callback, or its first command
        first = inner.registered_callback or next(iter(inner.registered_commands), None)
        callback = first.callback if first else None
    return plugins.registration_rank(getattr(callback, "__module__", None) or "")


def _command_named(argv: list[str]) -> str | None:
    """The sub-command `argv` invokes: its first word, as the root group takes only flags.
    None (every command is registered) for `flowsh`, `flowsh --help` and the like."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg
        if arg in ("-h", "--help"):
            return None
    return None


def main(argv: list[str] | None = None) -> None:
    with cli_errors():
        args = sys.argv[1:] if argv is None else argv
        build_app(_command_named(args))(args=argv, prog_name="flowsh")
