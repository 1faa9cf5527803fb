"""`flowsh list FILE`: the steps in run order, what each needs, and its description."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from flowsh import hookimpl

if TYPE_CHECKING:
    from flowsh.model import Workflow

# The shape of `flowsh list --json`; a change here is a change of a documented interface.
JSON_VERSION = 1


def steps_listing(wf: Workflow) -> dict[str, Any]:
    """`{"version", "workflow", "file", "steps": [{"name", "needs", "description"}]}`,
    the steps in the order a run with one slot starts them."""
    from flowsh.graph import Graph

    steps = {s.name: s for s in wf.steps}
    return {
        "version": JSON_VERSION,
        "workflow": wf.name,
        "file": wf.path,
        "steps": [{"name": n, "needs": list(steps[n].needs or ()),
                   "description": steps[n].description}
                  for n in Graph.build(wf).order],
    }


def list_cmd(
    file: Path = typer.Argument(..., help="Workflow file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (its shape is above)."),
) -> None:
    """List the steps in run order, what each needs, and their descriptions.

    The names are those `flowsh run --only`, `--from` and `--until` take.

    --json prints {"version": 1, "workflow": NAME, "file": PATH, "steps": [{"name":
    STEP, "needs": [STEP...], "description": TEXT or null}...]}, the steps in run order.
    """
    import json

    from flowsh.loader import load_workflow

    data = steps_listing(load_workflow(file))
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    rows = [(s["name"], ", ".join(s["needs"]) or "-",
             next(iter((s["description"] or "").strip().splitlines()), ""))
            for s in data["steps"]]
    width = [max(len(r[i]) for r in [("STEP", "NEEDS", ""), *rows]) for i in (0, 1)]
    for name, needs, desc in [("STEP", "NEEDS", "DESCRIPTION"), *rows]:
        typer.echo(f"{name:<{width[0]}}  {needs:<{width[1]}}  {desc}".rstrip())


@hookimpl
def flowsh_register_commands(app: typer.Typer) -> None:
    app.command("list")(list_cmd)
