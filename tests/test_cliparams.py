"""flowsh.cliparams: values converted without pydantic exactly as typer converts them."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer._click.exceptions import BadParameter
from typer._coercion import build_runtime_param
from typer.testing import CliRunner

from flowsh import cliparams

app = typer.Typer()


@app.command()
def cmd(
    n: int = typer.Option(1, min=0),
    x: float = typer.Option(0.0),
    s: str = typer.Option(""),
    p: Path = typer.Option(Path(".")),
    items: list[str] = typer.Option([]),
    paths: list[Path] = typer.Option([]),
) -> None: ...


VALUES = {
    "n": ["0", "8", "007", "-1", "abc", " 8", "1_000", "1.5", "", 5, "99999999999999999999"],
    "x": ["1", "1.5", "-2", "1e3", "nan", "abc", ".5", 3, 2.5],
    "s": ["", "text", "ünï", "-"],
    "p": ["file.yaml", "", "-", "a/b"],
    "items": [("a", "b"), ()],
    "paths": [("a", "b/c"), ()],
}


def _outcome(runtime, value, param):
    try:
        return "ok", runtime.coerce(value, param=param, ctx=None)
    except BadParameter as exc:
        return "error", exc.message


@pytest.mark.parametrize("name", sorted(VALUES))
def test_plain_conversion_matches_typer(name):
    command = typer.main.get_command(app)
    param = next(p for p in command.params if p.name == name)
    typer_own = build_runtime_param(param.type_descriptor)
    param._runtime_param = None
    cliparams.install([param])
    assert isinstance(param._runtime_param, cliparams.PlainParam)
    for value in VALUES[name]:
        want = _outcome(typer_own, value, param)
        got = _outcome(param._runtime_param, value, param)
        assert repr(got) == repr(want) and type(got[1]) is type(want[1]), (name, value)


def test_a_command_still_runs_and_refuses_as_typer_does():
    res = CliRunner().invoke(app, ["--n", "-1"])
    assert res.exit_code == 2 and "greater than or equal to 0" in res.output
