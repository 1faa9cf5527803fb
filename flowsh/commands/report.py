"""`flowsh report RUN_ID -o report.html`: a self-contained HTML page about one run."""

from __future__ import annotations

import typer

from flowsh import hookimpl


@hookimpl
def flowsh_register_commands(app: typer.Typer) -> None:
    @app.command("report")
    def report_command(
        run_id: str = typer.Argument(..., help="Run id (or a unique prefix)."),
        output: str | None = typer.Option(
            None, "--output", "-o", help="HTML file to write (default: flowsh-report-RUN_ID.html)."
        ),
        history: int = typer.Option(30, "--history", min=0, help="Earlier runs to compare with."),
        tail: int = typer.Option(40, "--tail", min=0, help="Log lines shown per step."),
        state: str | None = typer.Option(None, "--state", help="State URL."),
    ) -> None:
        """Write one HTML file: the DAG by step state, a timeline with retries, durations
        against history and each step's log tail. Opens offline; secrets masked."""
        from pathlib import Path

        from flowsh.monitorfiles import write_creating_dir
        from flowsh.report import generate
        from flowsh.stats import load_history
        from flowsh.store import check_liveness, open_backend

        backend = open_backend(state)
        try:
            run = backend.load_run(run_id)
            # A dead runner's run is `crashed`, as status says it.
            run = check_liveness(backend, run, read_only=True)
            past = load_history(backend, run.workflow, limit=history, exclude=run.run_id)
            # Only runs that started before this one are its history.
            past = [r for r in past if r.started_at <= run.started_at]
        finally:
            backend.close()
        html = generate(run, past, tail_lines=tail)
        path = Path(output or f"flowsh-report-{run.run_id}.html")
        if str(path) == "-":
            typer.echo(html, nl=False)
            return
        if path.is_dir():
            from flowsh.errors import UsageError

            raise UsageError(f"{path} is a directory: give -o a file name")
        write_creating_dir(path, html)
        typer.echo(f"wrote {path} ({run.workflow} run {run.run_id}, {run.status})")
