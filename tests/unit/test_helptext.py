"""flowsh.helptext: conventional usage lines on a small typer app of the test's own."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from flowsh.helptext import FlowshGroup, conventional


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer(cls=FlowshGroup, rich_markup_mode=None, add_completion=False)

    @app.command()
    def run(
        file: Path,
        params: Annotated[list[str] | None, typer.Argument()] = None,
        state: Annotated[str | None, typer.Option()] = None,
        jobs: Annotated[int, typer.Option()] = 1,
        ratio: Annotated[float, typer.Option()] = 1.0,
        quiet: Annotated[bool, typer.Option()] = False,
    ) -> None:
        typer.echo(f"file={file} params={params} jobs={jobs}")

    @app.command()
    def status(run_id: Annotated[str | None, typer.Argument()] = None) -> None:
        typer.echo(f"run_id={run_id}")

    return app


def _help(app: typer.Typer, *args: str) -> str:
    res = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert res.exit_code == 0, res.output
    return res.output


def test_usage_names_arguments_as_users_write_them(app: typer.Typer) -> None:
    out = _help(app, "run")
    assert "run [OPTIONS] FILE [KEY=VALUE]..." in out
    assert "<list[str]>" not in out and "{file}" not in out


def test_options_get_metavars(app: typer.Typer) -> None:
    out = _help(app, "run")
    assert "--state URL" in out and "--jobs N" in out and "--ratio NUMBER" in out
    assert "--quiet " in out and "--quiet TEXT" not in out


def test_optional_argument(app: typer.Typer) -> None:
    assert "status [OPTIONS] [RUN_ID]" in _help(app, "status")


def test_conventional_is_idempotent(app: typer.Typer) -> None:
    cmd = typer.main.get_command(app)
    assert conventional(cmd) is cmd and conventional(cmd) is cmd
    assert getattr(cmd, "_flowsh_conventional", False)
