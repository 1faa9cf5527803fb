"""``flowsh plugins``: list, install, uninstall and scaffold plugins.

Install and uninstall run pip in flowsh's own interpreter (``sys.executable -m pip``), so
a pipx-installed flowsh can take plugins.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import typer

from flowsh import hookimpl

plugins_app = typer.Typer(help="List, install, uninstall and create flowsh plugins.")

NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


@plugins_app.callback(invoke_without_command=True)
def plugins_list(
    ctx: typer.Context,
    json_: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List loaded plugins: name, version, hooks."""
    if ctx.invoked_subcommand is not None:
        return
    from flowsh.plugins import plugin_info

    info = plugin_info()
    if json_:
        typer.echo(json.dumps(info, indent=2))
        return
    rows = [(p["name"], "built-in" if p["builtin"] else f"{p['distribution']} {p['version']}",
             ", ".join(p["hooks"])) for p in info]
    for line in columns([("NAME", "FROM", "HOOKS"), *rows]):
        typer.echo(line)


def columns(rows: list[tuple[str, str, str]]) -> list[str]:
    """Rows as aligned columns: each as wide as its widest cell (the last left ragged)."""
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    return [f"{a:<{w0}}  {b:<{w1}}  {c}".rstrip() for a, b, c in rows]


def _pip(*args: str) -> list[str]:
    """Run pip quietly: on a failure one line (pip's own ERROR line), its whole log kept
    in a file the line names — a mistyped name should not scroll a screen of pip.

    Returns pip's summary lines (``Successfully installed ...``) on success.
    """
    import sh

    from flowsh.errors import PluginError

    python = sh.Command(sys.executable)
    log: list[str] = []
    try:
        python("-m", "pip", *args, _out=log.append, _err=log.append)
    except sh.ErrorReturnCode as exc:
        lines = "".join(log).strip().splitlines()
        detail = next((ln for ln in reversed(lines) if ln.startswith("ERROR")),
                      lines[-1] if lines else "")
        raise PluginError(f"pip {args[0]} failed (exit {exc.exit_code}): {detail} "
                          f"({_keep_pip_log(''.join(log))})") from None
    finally:
        from flowsh import plugins

        plugins.reset()
    return [ln.rstrip("\n") for ln in log
            if ln.startswith(("Successfully installed", "Successfully uninstalled",
                              "  Successfully uninstalled"))]


def _keep_pip_log(text: str) -> str:
    """Save pip's output as $FLOWSH_HOME/logs/pip.log (0600); say where it went."""
    import os

    from flowsh.errors import StateError
    from flowsh.state import ensure_private_dir, flowsh_home

    path = flowsh_home() / "logs" / "pip.log"
    try:
        try:
            ensure_private_dir(path.parent)  # refuses a linked logs/ (docs/state.md)
        except StateError as exc:
            raise OSError(str(exc)) from None
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as out:
            os.fchmod(fd, 0o600)
            out.write(text)
    except OSError:
        sys.stderr.write(text)  # nowhere to keep it: show it rather than lose it
        return "pip's full output is above"
    return f"pip's full output: {path}"


def _entry_points() -> dict[str, tuple[str, str]]:
    """Entry-point name -> (distribution, version) of installed flowsh plugins."""
    from importlib.metadata import entry_points

    out = {}
    for ep in entry_points(group="flowsh"):
        dist = getattr(ep, "dist", None)
        out[ep.name] = (dist.metadata["Name"], dist.version) if dist else ("?", "?")
    return out


@plugins_app.command("install")
def plugins_install(
    targets: list[str] = typer.Argument(..., help="Package names (flowsh-slack) or paths."),
    editable: bool = typer.Option(False, "--editable", "-e", help="pip install -e (paths)."),
    upgrade: bool = typer.Option(False, "--upgrade", "-U"),
) -> None:
    """Install plugins with pip into flowsh's own environment."""
    before = _entry_points()
    args: list[str] = ["install", "--disable-pip-version-check"]
    if upgrade:
        args.append("--upgrade")
    for target in targets:
        p = Path(target).expanduser()
        if p.exists():
            target = str(p.resolve())
        if editable:
            args.append("-e")
        args.append(target)
    for line in _pip(*args):
        typer.echo(line.strip())
    import importlib

    importlib.invalidate_caches()
    after = _entry_points()
    new = {n: v for n, v in after.items() if before.get(n) != v}
    for name, (dist, version) in sorted(new.items()):
        typer.echo(f"flowsh plugin {name} ready ({dist} {version})")
    if not new:
        typer.echo("installed; no new flowsh plugin entry points (group `flowsh`)", err=True)


@plugins_app.command("uninstall")
def plugins_uninstall(
    names: list[str] = typer.Argument(..., help="Plugin names (slack) or distributions."),
) -> None:
    """Uninstall plugins with pip."""
    eps = _entry_points()
    dists = [eps[n][0] if n in eps else n for n in names]
    for line in _pip("uninstall", "--yes", *dists):
        typer.echo(line.strip())


@plugins_app.command("new")
def plugins_new(
    name: str = typer.Argument(..., help="Plugin name: lowercase letters, digits and '-'."),
    directory: Path = typer.Option(Path("."), "--dir", "-d",
                                   help="Where to create flowsh-NAME/."),
) -> None:
    """Create a plugin package (a notifier) that installs and passes its own test."""
    target = scaffold_plugin(name, directory)
    typer.echo(f"created {target}\nnext: pip install -e {target} && pytest {target}")


def scaffold_plugin(name: str, directory: Path) -> Path:
    """Render ``templates/plugin/`` into ``directory/flowsh-NAME``; returns that path."""
    import jinja2

    from flowsh import __version__
    from flowsh.errors import UsageError
    from flowsh.templating import templates_dir

    if not NAME.match(name):
        raise UsageError(
            f"plugin name {name!r}: use lowercase letters, digits and single '-' (e.g. pager-duty)"
        )
    name = name.removeprefix("flowsh-")
    target = directory / f"flowsh-{name}"
    if target.exists():
        raise UsageError(f"{target} already exists")
    root = templates_dir() / "plugin"
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(root)),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    ctx: dict[str, Any] = {
        "name": name,
        "dist": f"flowsh-{name}",
        "module": "flowsh_" + name.replace("-", "_"),
        "flowsh_version": __version__,
    }
    files = sorted(t for t in env.list_templates() if t.endswith(".j2"))
    for tname in files:
        rel = env.from_string(tname.removesuffix(".j2")).render(ctx)
        out = target / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(env.get_template(tname).render(ctx), encoding="utf-8")
    return target


@hookimpl
def flowsh_register_commands(app: typer.Typer) -> None:
    app.add_typer(plugins_app, name="plugins")
