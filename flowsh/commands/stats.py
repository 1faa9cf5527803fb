"""`flowsh stats WORKFLOW`: success rate, duration percentiles, slowest and flakiest steps."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from flowsh import hookimpl

if TYPE_CHECKING:
    from flowsh.model import Workflow


def resolve_workflow(ref: str) -> tuple[str, Workflow | None]:
    """A workflow name, or a workflow file (whose name and step order are then used)."""
    from pathlib import Path

    path = Path(ref)
    if path.is_file():
        from flowsh.loader import load_workflow

        wf = load_workflow(path)
        return wf.identity, wf
    return ref, None


@hookimpl
def flowsh_register_commands(app: typer.Typer) -> None:
    @app.command("stats")
    def stats_command(
        workflow: str = typer.Argument(..., help="Workflow name, or its file."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        last: int = typer.Option(50, "--last", "-n", min=1, help="How many recent runs."),
        state: str | None = typer.Option(None, "--state", help="State URL."),
    ) -> None:
        """Success rate, p50/p95 run and step durations, the slowest and flakiest steps."""
        import json

        from flowsh.errors import NotFoundError
        from flowsh.stats import compute, format_text, load_history
        from flowsh.store import open_backend

        name, wf = resolve_workflow(workflow)
        backend = open_backend(state)
        named: list[str] = []
        try:
            runs = load_history(backend, name, limit=last)
            if not runs and wf is None:
                from flowsh.commands.runs import identities_named

                named = identities_named(backend, name)
        finally:
            backend.close()
        if not runs:
            hint = (f" (workflows named {name} are recorded by file: {', '.join(named)}; "
                    "or pass the workflow file)") if named else ""
            raise NotFoundError(f"no finished runs of workflow {name!r} in {backend.url}{hint}")
        stats = compute(name, runs)
        if as_json:
            typer.echo(json.dumps(stats.to_dict(), indent=2))
        else:
            order = [s.name for s in wf.steps] if wf else list(runs[0].step_names)
            typer.echo(format_text(stats, order))
