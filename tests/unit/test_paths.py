"""flowsh.paths: files and working directories relative to the workflow file."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from flowsh.loader import load_workflow
from flowsh.paths import resolve_path, step_cwd, workflow_dir

FLOW = """
name: w
workdir: sub
steps:
  - name: plain
    run: 'true'
  - name: rel
    run: 'true'
    workdir: deeper
  - name: abs
    run: 'true'
    workdir: /tmp
"""


def test_workflow_dir_is_the_files_directory(write_flow: Callable[..., Path], tmp_path: Path) -> None:
    wf = load_workflow(write_flow(FLOW))
    assert workflow_dir(wf) == tmp_path


def test_resolve_relative_absolute_home_and_vars(write_flow: Callable[..., Path], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    wf = load_workflow(write_flow(FLOW))
    assert resolve_path(wf, "scripts/load.sh") == tmp_path / "scripts/load.sh"
    assert resolve_path(wf, "/etc/x") == Path("/etc/x")
    assert resolve_path(wf, "x", base=Path("/base")) == Path("/base/x")
    monkeypatch.setenv("FLOWSH_T_DIR", "/from/env")
    assert resolve_path(wf, "$FLOWSH_T_DIR/y") == Path("/from/env/y")
    assert resolve_path(wf, "~/z") == Path(os.path.expanduser("~")) / "z"


def test_step_cwd_layers(write_flow: Callable[..., Path], tmp_path: Path) -> None:
    wf = load_workflow(write_flow(FLOW))
    assert step_cwd(wf, wf.step("plain")) == tmp_path / "sub"
    assert step_cwd(wf, wf.step("rel")) == tmp_path / "sub" / "deeper"
    assert step_cwd(wf, wf.step("abs")) == Path("/tmp")


def test_independent_of_the_callers_cwd(write_flow: Callable[..., Path], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    wf = load_workflow(write_flow("name: w\nsteps:\n  - {name: a, run: 'true'}\n"))
    monkeypatch.chdir("/")
    assert step_cwd(wf, wf.step("a")) == tmp_path
