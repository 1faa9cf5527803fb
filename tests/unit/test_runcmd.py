"""`flowsh run`'s work without typer (flowsh/runcmd.py), called as typer calls it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flowsh import runcmd
from flowsh.errors import UsageError


def _args(file: Path, **given: Any) -> dict[str, Any]:
    names = list(runcmd.run_command.__code__.co_varnames[:runcmd.run_command.__code__.co_argcount])
    flags = {"dry_run", "resume", "quiet", "json_events", "quiet_on_success", "skip_quietly",
             "scheduled", "force"}
    out: dict[str, Any] = {n: (False if n in flags else None) for n in names}
    return {**out, "file": file, **given}


def test_exit_code_of_the_run(write_flow: Callable[..., Path]) -> None:
    ok = write_flow('name: ok\nsteps:\n  - name: s\n    run: "true"\n', "ok.yaml")
    bad = write_flow('name: bad\nsteps:\n  - name: s\n    run: "exit 3"\n', "bad.yaml")
    assert runcmd.run_command(**_args(ok, quiet=True)) == 0
    assert runcmd.run_command(**_args(bad, quiet=True)) == 1


def test_dry_run_runs_nothing(write_flow: Callable[..., Path],
                              capsys: pytest.CaptureFixture[str]) -> None:
    flow = write_flow('name: plan\nsteps:\n  - name: s\n    run: "touch made"\n')
    assert runcmd.run_command(**_args(flow, dry_run=True)) is None
    assert "workflow plan: 1 step" in capsys.readouterr().out
    assert not (flow.parent / "made").exists()


def test_refusal_is_a_flowsh_error(write_flow: Callable[..., Path]) -> None:
    flow = write_flow('name: r\nsteps:\n  - name: s\n    run: "true"\n')
    with pytest.raises(UsageError, match="at least 1"):
        runcmd.run_command(**_args(flow, jobs=0))


def test_imports_no_typer() -> None:
    code = "import sys, flowsh.runcmd, flowsh.climain; print('typer' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"
