"""``flowsh import legacy.sh > flow.yaml``: a seed-style bash workflow as YAML.

The YAML twin keeps the bash file as its library (`source:`), so both files describe the
same workflow: loading either gives the same steps, settings and chain.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import typer

from flowsh import hookimpl


def _scalar(value: str) -> str:
    """A YAML scalar: single-quoted when that is enough, JSON (valid YAML) otherwise."""
    if "'" not in value and "\n" not in value and value.isprintable():
        return f"'{value}'"
    return json.dumps(value)


def to_yaml(path: Path, *, relative_to: Path | None = None) -> str:
    """The YAML text for the seed-style file at `path`.

    `relative_to` is the directory the YAML will live in, so `source:` points back at the
    bash file from there.
    """
    from flowsh.errors import WorkflowError
    from flowsh.loader import load_workflow
    from flowsh.seed import parse_seed, trailing_call

    wf = load_workflow(path)  # validates the chain and asks bash about the functions
    try:
        data, _ = parse_seed(path.read_text(encoding="utf-8"), path, check=False)
    except OSError as exc:
        raise WorkflowError(f"cannot read: {exc}", path=path) from None
    call = trailing_call(path.read_text(encoding="utf-8"))
    data_value = wf.params.get("data", "")
    data_note = (f"# from {path.name}:{call.line}: {call.function} {_scalar(data_value)}"
                 if call and data_value else
                 "# $1 of every function, as in the seed's execute_workflow")
    notes: list[str] = []
    if call and call.args and not data_value and call.args not in (["$@"], ["$*"], ["$1"]):
        # Arguments the YAML cannot carry are said, never dropped silently.
        notes.append(f"# note: {path.name}:{call.line} ends with `{call.function} "
                     f"{' '.join(call.args)}`; flowsh cannot carry those arguments "
                     "(pass data=VALUE to `flowsh run`)")
    base = relative_to or Path.cwd()
    src = os.path.relpath(path.resolve(), base.resolve())
    lines = [
        f"# Converted by `flowsh import {path.name}` from its declare -A workflow chain.",
        f"# Each step calls one function of {path.name}; flowsh sources that file before",
        "# each step for its definitions only (its trailing executor call does not run).",
        "# No `name:`: lock, history and resume are this file's own (a `name:` shared with",
        "# another file would share them).",
        f"source: {_scalar(src)}",
        "strict: false          # the functions were written without `set -e`",
        *notes,
        "params:",
        f"  data: {_scalar(data_value)}".ljust(23) + data_note,
        "steps:",
    ]
    steps: list[dict[str, Any]] = data["steps"]
    for step in steps:
        lines.append(f"  - name: {_scalar(step['name'])}")
        lines.append(f"    run: {_scalar(step['run'])}")
    return "\n".join(lines) + "\n"


def import_cmd(
    file: Path = typer.Argument(..., help="A seed-style bash workflow (declare -A workflow=...)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write here instead of stdout."),  # noqa: UP045,E501
    force: bool = typer.Option(False, "--force", help="Overwrite --output if it exists."),
) -> None:
    """Convert a seed-style bash workflow file to YAML."""
    if output is None:
        typer.echo(to_yaml(file), nl=False)
        return
    from flowsh.commands.init import write_new

    write_new(output, to_yaml(file, relative_to=output.parent), force=force)
    typer.echo(f"created {output}", err=True)


@hookimpl
def flowsh_register_commands(app: typer.Typer) -> None:
    app.command("import")(import_cmd)
