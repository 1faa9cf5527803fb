"""`flowsh why FILE STEP`: would the step run, and what changed since its last success."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from flowsh import hookimpl


def why_cmd(
    file: Path = typer.Argument(..., help="Workflow file."),
    step: str = typer.Argument(..., help="Step name."),
    params: Optional[list[str]] = typer.Argument(None, help="KEY=VALUE params, as for run."),  # noqa: UP045
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    scheduled_time: Optional[str] = typer.Option(  # noqa: UP045
        None, "--scheduled-time", metavar="T",
        help="For the run of slot T (RFC 3339, as `flowsh run --scheduled-time`): the slot "
             "is part of the fingerprint. Default: a run that stands for no slot."),
    state: Optional[str] = typer.Option(None, "--state", envvar="FLOWSH_STATE", help="State URL."),  # noqa: UP045
) -> None:
    """Whether a step with `sources:` would run, and exactly what changed since its last
    successful run (files, function bodies, variables, the command text, the slot). Reads
    `flowsh run`'s store and writes nothing (no store, no key is made); the exported
    script keeps its own record."""
    import json

    from flowsh.checks import check_params
    from flowsh.errors import UsageError, did_you_mean
    from flowsh.loader import load_workflow, parse_overrides
    from flowsh.slot import format_time, parse_time
    from flowsh.store import open_existing
    from flowsh.uptodate import explain

    wf = load_workflow(file)
    names = [s.name for s in wf.steps]
    if step not in names:
        raise UsageError(f"no step {step!r} in {wf.path}{did_you_mean(step, names)}")
    slot = None
    if scheduled_time is not None:
        try:  # as the run records it: `Z` written +00:00
            slot = format_time(parse_time(scheduled_time))
        except ValueError as exc:
            raise UsageError(f"--scheduled-time: {exc}") from None
    overrides = parse_overrides(params or [])
    check_params(wf, overrides)
    backend = open_existing(state or wf.state)
    try:
        verdict = explain(wf, step, overrides, backend, slot)
    finally:
        if backend is not None:
            backend.close()
    if as_json:
        typer.echo(json.dumps(verdict.to_dict(), indent=2))
        return
    if verdict.would_run:
        typer.echo(f"{step}: would run: {verdict.reason}")
    else:
        typer.echo(f"{step}: would be skipped, {verdict.reason}")
    for change in verdict.changes:
        typer.echo(f"  {change.describe()}")


@hookimpl
def flowsh_register_commands(app: typer.Typer) -> None:
    app.command("why")(why_cmd)
