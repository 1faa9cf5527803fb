"""flowsh.runenv: precedence of a step's environment, params, masking, outputs kept."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from flowsh.errors import UsageError
from flowsh.loader import load_workflow
from flowsh.runenv import RunEnvironment, resolve_params
from flowsh.secrets import MASK
from flowsh.state import RunRecord

FLOW = """
name: w
env_file: .env
env:
  V: from-env
  ENV_ONLY: e
params:
  V: from-params
  P: p
  DB_PASSWORD: hunter2222
steps:
  - name: a
    run: 'true'
    env:
      V: from-step
      STEP_ONLY: s
"""


@pytest.fixture
def wf(write_flow: Callable[..., Path], tmp_path: Path):  # type: ignore[no-untyped-def]
    (tmp_path / ".env").write_text("V=from-env-file\nFILE_ONLY=f\n")
    return load_workflow(write_flow(FLOW))


def test_precedence_env_file_env_params_upstream_step(wf, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    renv = RunEnvironment(wf, {}, None)
    step = wf.step("a")
    env = renv.for_step(step, {}, run_id="r1", attempt=1, out_path=tmp_path / "a.out")
    assert env["V"] == "from-step"
    assert (env["FILE_ONLY"], env["ENV_ONLY"], env["P"], env["STEP_ONLY"]) == ("f", "e", "p", "s")
    # without the step's own env, each layer wins over the one below it
    assert renv.env["V"] == "from-params"
    up = renv.for_step(step.model_copy(update={"env": {}}), {"V": "from-upstream"},
                       run_id="r1", attempt=1, out_path=tmp_path / "a.out")
    assert up["V"] == "from-upstream"
    assert "PATH" in env and env["PATH"] == os.environ["PATH"]  # os.environ is the bottom


def test_flowsh_variables_come_last(wf, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    renv = RunEnvironment(wf, {}, None)
    env = renv.for_step(wf.step("a"), {"FLOWSH_STEP": "spoofed"}, run_id="r9", attempt=3,
                        out_path=tmp_path / "a.out")
    assert (env["FLOWSH_RUN_ID"], env["FLOWSH_WORKFLOW"], env["FLOWSH_STEP"],
            env["FLOWSH_ATTEMPT"], env["FLOWSH_OUTPUT"]) == ("r9", "w", "a", "3",
                                                             str(tmp_path / "a.out"))


def test_command_line_params_win_and_are_masked(wf) -> None:  # type: ignore[no-untyped-def]
    renv = RunEnvironment(wf, {"P": "cli", "DB_PASSWORD": "cli-secret-1"}, None)
    assert renv.params["P"] == "cli"
    assert renv.masked_params()["DB_PASSWORD"] == MASK
    assert renv.mask("pw cli-secret-1") == f"pw {MASK}"
    assert renv.secret("API_TOKEN") and not renv.secret("P")


def test_resumed_secret_param_must_be_given_again(wf) -> None:  # type: ignore[no-untyped-def]
    prior = RunRecord.__new__(RunRecord)
    prior.run_id, prior.params = "r0", {"P": "old", "DB_PASSWORD": MASK}
    # the file has a value for it: used, with a warning
    assert resolve_params(wf, {}, prior)["DB_PASSWORD"] == "hunter2222"
    assert resolve_params(wf, {}, prior)["P"] == "old"
    prior.params = {"OTHER_SECRET": MASK}
    with pytest.raises(UsageError, match=r"pass OTHER_SECRET=\.\.\. again"):
        resolve_params(wf, {}, prior)


def test_required_params(write_flow: Callable[..., Path]) -> None:
    wf = load_workflow(write_flow("name: w\nparams:\n  DATE:\nsteps:\n  - {name: a, run: 'true'}\n"))
    with pytest.raises(UsageError, match="parameter DATE needs a value"):
        resolve_params(wf, {}, None)
    assert resolve_params(wf, {"DATE": "2026-12-05"}, None) == {"DATE": "2026-12-05"}


def test_take_and_keep_outputs(wf, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    renv = RunEnvironment(wf, {}, None)
    (tmp_path / "a.out").write_text("RESULT=42\nAPI_TOKEN=tok-abcdef\n")
    (tmp_path / "a.log").write_text("printed tok-abcdef\n")
    outputs, bad = renv.take_outputs(tmp_path, "a", read=True)
    assert bad is None and outputs == {"RESULT": "42", "API_TOKEN": "tok-abcdef"}
    assert not (tmp_path / "a.out").exists()
    kept = renv.keep_outputs(tmp_path, "a", outputs)
    assert kept == {"RESULT": "42", "API_TOKEN": MASK}
    assert (tmp_path / "a.log").read_text() == f"printed {MASK}\n"
    assert renv.unmask_outputs(tmp_path, "a", kept) == outputs


def test_bad_outputs_reported_masked(wf, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    renv = RunEnvironment(wf, {}, None)
    (tmp_path / "a.out").write_text("hunter2222 is not an output\n")
    outputs, bad = renv.take_outputs(tmp_path, "a", read=True)
    assert outputs == {} and bad is not None and "line 1" in bad and "hunter2222" not in bad
    (tmp_path / "a.out").write_text("X=1\n")
    assert renv.take_outputs(tmp_path, "a", read=False) == ({}, None)
    assert not (tmp_path / "a.out").exists()
