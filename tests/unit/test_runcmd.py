"""`flowsh run`'s work without typer (flowsh/runcmd.py), called as typer calls it."""

from __future__ import annotations

import os
import site
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import flowsh
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


# What a plain run of a one-step file must not import: each serves a feature it does not
# use, and costs ~1-3 ms of every start (issue 14's budget; docs/performance.md).
NOT_FOR_A_PLAIN_RUN = {
    "typer", "click", "_hashlib", "shutil", "tempfile", "socket", "difflib", "croniter",
    "flowsh.uptodate", "flowsh.fpkey", "flowsh.slot", "flowsh.cron", "flowsh.seed",
}


def test_a_plain_run_imports_only_what_it_uses(tmp_path: Path) -> None:
    flow = tmp_path / "one.yaml"
    flow.write_text('name: one\nsteps:\n  - name: s\n    run: "true"\n')
    listing = tmp_path / "modules.txt"
    code = ("import atexit, sys\n"
            "out, flow = sys.argv[1:]\n"
            "atexit.register(lambda: open(out, 'w').write('\\n'.join(sys.modules)))\n"
            "sys.argv = ['flowsh', 'run', '-q', flow]\n"
            "from flowsh.__main__ import main\n"
            "main()\n")
    # Without site (-S): a .pth file of this machine may import anything (one here imports
    # tempfile). flowsh and its dependencies from PYTHONPATH instead, whose .pth files are
    # not run. Built-in plugins only: a third-party one installed here may import anything.
    path = [str(Path(flowsh.__file__).parents[1]), *site.getsitepackages()]
    env = {**os.environ, "FLOWSH_HOME": str(tmp_path / "home"), "FLOWSH_LOAD_ENTRYPOINTS": "0",
           "PYTHONPATH": os.pathsep.join(path)}
    # The first start (a new home: its caches are written) and the usual one (warm).
    for start in ("first", "second"):
        subprocess.run([sys.executable, "-S", "-c", code, str(listing), str(flow)], env=env,
                       check=True)
        imported = set(listing.read_text().split("\n"))
        assert "flowsh.engine" in imported  # it did run
        assert (start, imported & NOT_FOR_A_PLAIN_RUN) == (start, set())
