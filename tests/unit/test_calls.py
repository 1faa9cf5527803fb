"""flowsh/calls.py: the parent side of `call:` (docs/semantics.md CALL)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flowsh import calls
from flowsh.errors import WorkflowError
from flowsh.loader import load_workflow
from flowsh.model import json_schema
from flowsh.runopts import PARAMS_VAR
from flowsh.steps import build_argv


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_child_path_is_relative_to_the_calling_file(tmp_path: Path) -> None:
    _write(tmp_path, "sub/child.yaml", "steps: [{name: c, run: 'true'}]\n")
    wf = load_workflow(_write(tmp_path, "flow.yaml",
                              "steps:\n  - {name: s, call: sub/child.yaml}\n"))
    assert calls.child_path(wf, wf.steps[0]) == tmp_path / "sub" / "child.yaml"


def test_cycle_message_names_the_chain() -> None:
    assert calls.cycle_message(["/x/a.yaml", "/x/b.yaml"], "/x/a.yaml") == \
        "call cycle: a.yaml -> b.yaml -> a.yaml"
    assert calls.cycle_message(["/x/a.yaml"], "/x/a.yaml") == "call cycle: a.yaml -> a.yaml"
    assert calls.cycle_message(["/x/a.yaml"], "/x/b.yaml") is None


def test_check_calls_refuses_a_cycle_at_the_calling_step(tmp_path: Path) -> None:
    _write(tmp_path, "b.yaml", "steps:\n  - {name: y, run: 'true'}\n  - {name: z, call: c.yaml}\n")
    _write(tmp_path, "c.yaml", "steps:\n  - {name: w, call: a.yaml}\n")
    wf = load_workflow(_write(tmp_path, "a.yaml", "steps:\n  - name: x\n    call: b.yaml\n"))
    with pytest.raises(WorkflowError) as err:
        calls.check_calls(wf)
    text = str(err.value)
    assert text.startswith(f"{tmp_path / 'a.yaml'}:3:11: step 'x': call 'b.yaml': ")
    assert text.endswith("call cycle: a.yaml -> b.yaml -> c.yaml -> a.yaml")


def test_check_calls_refuses_unknown_params_and_bad_children(tmp_path: Path) -> None:
    _write(tmp_path, "child.yaml", "params: {day: null}\nsteps: [{name: c, run: 'true'}]\n")
    wf = load_workflow(_write(tmp_path, "flow.yaml",
                              "steps:\n  - name: s\n    call: child.yaml\n    params: {dya: 1}\n"))
    with pytest.raises(WorkflowError, match=r"flow.yaml:3:11: step 's': call 'child.yaml': "
                       r"param 'dya' is not declared by child.yaml \(declared: day\)"):
        calls.check_calls(wf)
    _write(tmp_path, "child.yaml", "steps: [{name: c, run: 'true', retries: -1}]\n")
    with pytest.raises(WorkflowError, match=r"child.yaml:1:.*retries"):
        calls.check_calls(wf)


def test_fill_params_given_then_environment_then_default(tmp_path: Path) -> None:
    child = load_workflow(_write(tmp_path, "child.yaml",
                                 "params: {a: da, b: db, c: dc, req: null}\n"
                                 "steps: [{name: c, run: 'true'}]\n"))
    got = calls.fill_params(child, {"a": "given"}, {"a": "env", "b": "env", "req": "r",
                                                    "other": "x"})
    assert got == {"a": "given", "b": "env", "req": "r"}  # c: the child's default applies


def test_called_secrets_are_the_childrens_transitively(tmp_path: Path) -> None:
    _write(tmp_path, "grand.yaml", "secrets: [SESSION]\nsteps: [{name: g, run: 'true'}]\n")
    _write(tmp_path, "child.yaml", "secrets: [PIN]\nparams: {DB_PASSWORD: x}\n"
           "steps: [{name: c, call: grand.yaml}, {name: d, call: child.yaml}]\n")
    wf = load_workflow(_write(tmp_path, "flow.yaml", "steps: [{name: s, call: child.yaml}]\n"))
    assert calls.called_secrets(wf) == {"PIN", "DB_PASSWORD", "SESSION"}


def test_step_environment_and_argv_carry_no_param_on_the_command_line(tmp_path: Path) -> None:
    _write(tmp_path, "child.yaml", "params: {n: 1}\nsteps: [{name: c, run: 'true'}]\n")
    wf = load_workflow(_write(tmp_path, "flow.yaml",
                              "steps: [{name: s, call: child.yaml, params: {n: s3cr3t}}]\n"))
    env = calls.step_environment({"KEEP": "1"}, wf, wf.steps[0], child_run="C",
                                 parent_run="P", state_url="sqlite:///x.db",
                                 secrets={"pin", "DB_PASSWORD"})
    assert env["KEEP"] == "1"
    assert json.loads(env[PARAMS_VAR]) == {"n": "s3cr3t"}
    assert (env[calls.RUN_VAR], env[calls.PARENT_VAR], env[calls.STEP_VAR]) == ("C", "P", "s")
    assert json.loads(env[calls.CHAIN_VAR]) == [str(tmp_path / "flow.yaml")]
    assert json.loads(env[calls.SECRETS_VAR]) == ["DB_PASSWORD", "pin"]
    argv = build_argv(wf, wf.steps[0])
    assert argv[1:] == ["-m", "flowsh", "call-child"]
    assert "s3cr3t" not in " ".join(argv)


@pytest.mark.parametrize("step, message", [
    ("{name: s, call: c.yaml, run: 'true'}", "exactly one of `run`, `script` or `call`"),
    ("{name: s, script: x.sh, call: c.yaml}", "exactly one of"),
    ("{name: s, run: 'true', params: {a: 1}}", "`params` goes with `call`"),
    ("{name: s, call: c.yaml, params: {1a: x}}", "not a shell identifier"),
    ("{name: s, call: ''}", "call"),
])
def test_model_refuses_bad_call_steps(tmp_path: Path, step: str, message: str) -> None:
    with pytest.raises(WorkflowError, match=message):
        load_workflow(_write(tmp_path, "flow.yaml", f"steps: [{step}]\n"))


def test_schema_covers_call_and_params() -> None:
    step = json_schema()["$defs"]["Step"]["properties"]
    assert step["call"]["anyOf"][0]["type"] == "string"
    assert "params" in step
