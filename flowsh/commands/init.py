"""``flowsh init [NAME] [--from SCRIPT]``: scaffold a workflow file (and a bash library).

The files come from jinja2 templates in ``templates/init/``, full of comments that teach
the keys. Existing files are never overwritten without ``--force``.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Optional

import typer

from flowsh import hookimpl
from flowsh.errors import UsageError
from flowsh.fileio import atomic_write


def _env() -> object:
    import jinja2

    from flowsh.templating import templates_dir

    root = templates_dir() / "init"
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root)),
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )
    # jinja's own `tojson` escapes < > & ' for HTML (`\u0026`): valid YAML, unreadable.
    # A JSON string is a YAML double-quoted scalar.
    env.filters["yaml_str"] = lambda value: json.dumps(value, ensure_ascii=False)
    return env


def render(template: str, **values: object) -> str:
    env = _env()
    return env.get_template(template).render(**values)  # type: ignore[attr-defined, no-any-return]


def write_new(path: Path, text: str, *, force: bool, mode: int = 0o600) -> None:
    """Write atomically (temp + fsync + rename); refuse to replace a file unless `force`."""
    if path.exists() and not force:
        raise UsageError(f"{path} already exists (use --force to overwrite it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text, mode)


def _name_of(raw: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", raw).strip("._-")
    return name or "workflow"


def scaffold_workflow(directory: Path, name: str, *, from_script: Path | None = None,
             force: bool = False) -> list[Path]:
    """Create the files; returns their paths. The workflow file is `<name>.yaml`."""
    from flowsh.commands.wrap import command_base

    name = _name_of(name)
    wf_file = directory / f"{name}.yaml"
    if from_script is not None:
        script = from_script if from_script.is_absolute() else Path(os.path.relpath(
            from_script.resolve(), directory.resolve()))
        if not (directory / script).is_file():
            raise UsageError(f"--from {from_script}: no such file")
        from flowsh.scriptsplit import stages

        try:
            raw = (directory / script).read_bytes()
        except OSError as exc:
            raise UsageError(f"--from {from_script}: {exc.strerror}") from None
        if b"\0" in raw:
            raise UsageError(f"--from {from_script}: not a shell script (binary data); "
                             f"for a program, use `flowsh wrap -- {from_script}`")
        found, from_main, left = stages(raw.decode(errors="replace"))
        if found:
            steps: list[dict[str, str]] = []
            taken: set[str] = set()
            for func, run in found:
                step = base = _name_of(func)
                n = 1
                while step in taken:  # `rotate 7` and `rotate 30`: rotate, rotate-2
                    n += 1
                    step = f"{base}-{n}"
                taken.add(step)
                steps.append({"name": step, "run": run})
            text = render("from_functions.yaml.j2", name=name, file=wf_file.name,
                          script=str(script), steps=steps,
                          from_main=from_main, left=left)
            write_new(wf_file, text, force=force)
            return [wf_file]
        text = render("from_script.yaml.j2", name=name, file=wf_file.name, script=str(script),
                      step=_name_of(command_base(str(script))))
        write_new(wf_file, text, force=force)
        return [wf_file]
    lib = directory / "lib.sh"
    values = {"name": name, "file": wf_file.name, "lib": lib.name,
              "today": time.strftime("%Y-%m-%d")}
    if lib.exists() and not force:
        raise UsageError(f"{lib} already exists (use --force to overwrite it)")
    write_new(wf_file, render("workflow.yaml.j2", **values), force=force)
    write_new(lib, render("lib.sh.j2", **values), force=force, mode=0o700)
    return [wf_file, lib]


def init_cmd(
    name: Optional[str] = typer.Argument(None, help="Workflow name (default: this directory's name)."),  # noqa: UP045,E501
    from_script: Optional[Path] = typer.Option(None, "--from", metavar="SCRIPT", help="Make a workflow from this existing bash script: one step per function its entry point calls (`main`, or whatever function its last line calls), in that order (or per function it defines, when it has none), the script loaded with `source:`; a script without functions becomes one step that runs it."),  # noqa: UP045,E501
    directory: Path = typer.Option(Path("."), "--dir", "-C", help="Where to write the files."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing files."),
) -> None:
    """Scaffold a workflow file (and a lib.sh of step functions) with comments on every key.

    With --from SCRIPT: a workflow for an existing script. A script of functions and
    `main "$@"` gets one step per function `main` calls, in the order it calls them (no
    `main`: one step per function defined, in file order); the steps call the functions
    from the script, loaded with `source:` (definitions only: its `main "$@"` is not run).
    A statement of `main` that is more than a bare call (arguments, a pipeline, a condition
    or loop) runs as written in one step, so it keeps its meaning.
    A script without functions becomes one step that runs it.
    """
    if name is None:
        name = Path(from_script).stem if from_script else directory.resolve().name
    created = scaffold_workflow(directory, name, from_script=from_script, force=force)
    for p in created:
        typer.echo(f"created {p}")
    typer.echo(f"next: flowsh validate {created[0]} && flowsh run {created[0]}")


@hookimpl
def flowsh_register_commands(app: typer.Typer) -> None:
    app.command("init")(init_cmd)
