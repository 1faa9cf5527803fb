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
    """`{"version", "workflow", "file", "steps": [{"name", "needs", "description",
    "foreach", "max_parallel"}]}`, the steps in the order a run with one slot starts them."""
    from flowsh.graph import Graph

    steps = {s.name: s for s in wf.steps}
    return {
        "version": JSON_VERSION,
        "workflow": wf.name,
        "file": wf.path,
        "steps": [{"name": n, "needs": list(steps[n].needs or ()),
                   "description": steps[n].description,
                   "foreach": _foreach(steps[n].foreach),
                   "max_parallel": steps[n].max_parallel}
                  for n in Graph.build(wf).order],
    }


def _foreach(value: object) -> Any:
    """A step's `foreach:` as the file writes it (a list, or {file|command|output: TEXT})."""
    if value is None or isinstance(value, list):
        return value
    dumped: dict[str, Any] = value.model_dump()  # type: ignore[attr-defined]
    return dumped


def _foreach_text(step: dict[str, Any]) -> str:
    each = step["foreach"]
    if each is None:
        return ""
    text = (", ".join(each) if isinstance(each, list)
            else " ".join(f"{k} {v}" for k, v in each.items()))
    text = text.splitlines()[0] if text.strip() else text
    limit = f" (max {step['max_parallel']})" if step["max_parallel"] else ""
    return f"each of {text}{limit}"


def list_cmd(
    file: Path = typer.Argument(..., help="Workflow file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (its shape is above)."),
) -> None:
    """List the steps in run order, what each needs, and their descriptions.

    The names are those `flowsh run --only`, `--from` and `--until` take.

    --json prints {"version": 1, "workflow": NAME, "file": PATH, "steps": [{"name":
    STEP, "needs": [STEP...], "description": TEXT or null, "foreach": [ITEM...] or
    {"file"|"command"|"output": TEXT} or null, "max_parallel": N or null}...]}, the steps
    in run order. A foreach step runs as one instance per item (STEP[ITEM]); the
    selection options take the step's name, which selects all its items.
    """
    import json

    from flowsh.loader import load_workflow

    data = steps_listing(load_workflow(file))
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    rows = [(s["name"], ", ".join(s["needs"]) or "-",
             "; ".join(x for x in (
                 next(iter((s["description"] or "").strip().splitlines()), ""),
                 _foreach_text(s)) if x))
            for s in data["steps"]]
    width = [max(len(r[i]) for r in [("STEP", "NEEDS", ""), *rows]) for i in (0, 1)]
    for name, needs, desc in [("STEP", "NEEDS", "DESCRIPTION"), *rows]:
        typer.echo(f"{name:<{width[0]}}  {needs:<{width[1]}}  {desc}".rstrip())


@hookimpl
def flowsh_register_commands(app: typer.Typer) -> None:
    app.command("list")(list_cmd)
