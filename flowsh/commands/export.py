"""`flowsh export FILE --bash|--crontab|--systemd|--format NAME`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from flowsh import hookimpl
from flowsh.errors import StateError, UsageError
from flowsh.fileio import atomic_write


def write_atomic(path: Path, text: str, mode: int) -> None:
    """temp + fsync + rename, so a reader never sees half a script."""
    path = path.resolve()
    try:
        atomic_write(path, text, mode)
    except OSError as exc:
        raise StateError(f"{path}: cannot write: {exc.strerror}") from None


def export_command(
    file: Annotated[Path, typer.Argument(help="The workflow file.")],
    bash: Annotated[bool, typer.Option("--bash", help="A standalone bash script.")] = False,
    crontab: Annotated[bool, typer.Option("--crontab", help="The crontab block.")] = False,
    systemd: Annotated[
        bool, typer.Option("--systemd", help="A user .service and .timer (into -o DIR).")
    ] = False,
    fmt: Annotated[
        str | None, typer.Option("--format", help="Any registered exporter by name.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write here (a directory for --systemd).")
    ] = None,
    inline: Annotated[
        bool, typer.Option("--inline", help="--bash: embed the scripts and libraries steps use.")
    ] = False,
    script: Annotated[
        Path | None,
        typer.Option("--script", help="--crontab/--systemd: run this exported script (flock) "
                     "instead of `flowsh run`."),
    ] = None,
    cron: Annotated[
        list[str] | None, typer.Option("--cron", help="Cron expression(s) instead of `schedule`.")
    ] = None,
    path_from_env: Annotated[
        bool, typer.Option("--path-from-env", help="--crontab/--systemd: write your PATH "
                           "(deduplicated) instead of /usr/local/bin:/usr/bin:/bin.")
    ] = False,
    option: Annotated[
        list[str] | None, typer.Option("--option", metavar="KEY=VALUE",
                                       help="An option for a plugin's exporter (repeatable).")
    ] = None,
) -> None:
    """Export a workflow: a standalone bash script, crontab lines, or systemd units."""
    from flowsh import plugins
    from flowsh.loader import load_workflow

    chosen = [n for n, on in (("bash", bash), ("crontab", crontab), ("systemd", systemd)) if on]
    if fmt:
        chosen.append(fmt)
    if len(chosen) != 1:
        raise UsageError("choose one of --bash, --crontab, --systemd or --format NAME")
    kind = chosen[0]
    wf = load_workflow(file)
    # One validation path: what `flowsh validate` and `flowsh run` refuse is never exported
    # (a typo'd notify channel type ran in the script and its alert was lost).
    from flowsh.checks import check_workflow

    check_workflow(wf)
    exporters = plugins.registry("exporters")
    if kind not in exporters:
        known = ", ".join(sorted(exporters)) or "none"
        raise UsageError(f"unknown export format {kind!r} (known: {known})")
    # Every exporter gets every option (a third party's too); each takes what it knows.
    options: dict[str, object] = {
        "inline": inline,
        "script_name": output.name if output else None,
        "exprs": cron or None,
        "script": str(script) if script else None,
        **parse_options(option or []),
    }
    if path_from_env:
        options["path"] = os.environ.get("PATH", "")
    result = exporters[kind](wf, **options)
    if isinstance(result, dict):
        _write_files(result, output or Path.cwd())
        return
    if output is None:
        typer.echo(result, nl=False)
        return
    # A script must be executable; everything else flowsh writes is private.
    write_atomic(output, result, 0o700 if result.startswith("#!") else 0o600)
    typer.echo(f"wrote {output}", err=True)


def parse_options(pairs: list[str]) -> dict[str, str]:
    """`--option KEY=VALUE` for a third-party exporter; the value is taken verbatim."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"--option {pair!r} must be KEY=VALUE with KEY a name")
        out[key] = value
    return out


def _write_files(files: dict[str, str], outdir: Path) -> None:
    """An exporter's several files (systemd's service and timer) into one directory."""
    if outdir.exists() and not outdir.is_dir():
        raise UsageError(f"{outdir}: this format writes {len(files)} files; -o must be a "
                         "directory")
    try:
        outdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(f"{outdir}: cannot create directory: {exc.strerror}") from None
    for name, text in files.items():
        if Path(name).name != name or name in (".", ".."):
            raise UsageError(f"the exporter named a file {name!r} outside {outdir}")
        write_atomic(outdir / name, text, 0o600)
        typer.echo(str(outdir / name))


@hookimpl
def flowsh_register_commands(app: typer.Typer) -> None:
    app.command("export")(export_command)
