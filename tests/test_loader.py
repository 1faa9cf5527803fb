"""Workflow files: what is accepted, and the one-line FILE:LINE:COL errors for what is not."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flowsh.envfile import read_env_file
from flowsh.errors import EXIT_USAGE, WorkflowError
from flowsh.loader import load_workflow, parse_overrides
from flowsh.model import json_schema


def test_chain_without_needs_and_defaults_applied(write_flow: Callable[..., Path]) -> None:
    path = write_flow("""
        name: etl
        defaults: {retries: 2, retry_delay: 90s, timeout: 1h30m}
        steps:
          - {name: extract, run: "true"}
          - {name: transform, run: "true", retries: 0, timeout: 5m}
          - {name: report, run: "true", needs: []}
    """)
    wf = load_workflow(path)
    assert [s.needs for s in wf.steps] == [[], ["extract"], []]
    extract, transform, _ = wf.steps
    assert (extract.retries, extract.retry_delay, extract.timeout) == (2, 90.0, 5400.0)
    assert (transform.retries, transform.timeout) == (0, 300.0)
    assert wf.path == str(path.resolve())


def test_name_defaults_to_file_stem_and_scalars_become_strings(write_flow: Callable[..., Path]) -> None:
    wf = load_workflow(write_flow("""
        params: {count: 3, flag: true}
        env: {RATE: 0.5}
        steps: [{name: a, run: echo}]
    """, name="nightly-backup.yaml"))
    assert wf.name == "nightly-backup"
    assert wf.params == {"count": "3", "flag": "true"}
    assert wf.env == {"RATE": "0.5"}


def _error(write_flow: Callable[..., Path], text: str) -> WorkflowError:
    path = write_flow(text)
    with pytest.raises(WorkflowError) as info:
        load_workflow(path)
    err = info.value
    assert err.exit_code == EXIT_USAGE
    assert "\n" not in str(err)
    assert str(err).startswith(f"{path}:")
    return err


@pytest.mark.parametrize(
    ("text", "line", "col", "fragment"),
    [
        ("steps:\n  - name: a\n    run: [unclosed\n", 4, 1, "malformed YAML"),
        ("steps:\n  - name: a\n    run: x\n    timout: 5m\n", 4, 5,
         "unknown key 'timout' (did you mean 'timeout'?)"),
        ("steps:\n  - name: a\n    run: x\nconcurrancy: 2\n", 4, 1, "did you mean 'concurrency'"),
        ("steps:\n  - name: a\n    run: x\n  - name: a\n    run: y\n", 4, 11,
         "duplicate step name 'a'"),
        ("steps:\n  - name: a\n    run: x\n    needs: [b]\n", 4, 13, "needs unknown step 'b'"),
        ("steps:\n  - name: a\n    run: x\n    timeout: 5 minutes\n", 4, 14, "invalid duration"),
        ("params:\n  my-day: x\nsteps:\n  - name: a\n    run: x\n", 2, 3,
         "not a shell identifier"),
        ("steps:\n  - name: a\n    run: x\n    script: y.sh\n", 2, 5, "exactly one of"),
        ("steps:\n  - name: a\n    script: missing.sh\n", 3, 13, "script 'missing.sh' not found"),
        ("steps:\n  - name: a\n    run: x\n    run: y\n", 4, 5, "duplicate key 'run'"),
        ("steps: []\n", 1, 8, "at least 1"),
        ("steps:\n  - name: a\n    run: x\n    retries: -1\n", 4, 14, "greater than or equal"),
    ],
)
def test_errors_point_at_file_line_col(
    write_flow: Callable[..., Path], text: str, line: int, col: int, fragment: str
) -> None:
    err = _error(write_flow, text)
    assert (err.line, err.col) == (line, col), str(err)
    assert fragment in str(err)


def test_cycle_is_printed(write_flow: Callable[..., Path]) -> None:
    err = _error(write_flow, """
        steps:
          - {name: a, run: x, needs: [c]}
          - {name: b, run: x, needs: [a]}
          - {name: c, run: x, needs: [b]}
    """)
    assert "dependency cycle: " in str(err)
    cycle = str(err).split("dependency cycle: ")[1].split(" -> ")
    assert cycle[0] == cycle[-1] and sorted(cycle[:-1]) == ["a", "b", "c"]


def test_missing_file_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError, match="no such file"):
        load_workflow(tmp_path / "nope.yaml")
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(WorkflowError, match="empty"):
        load_workflow(tmp_path / "empty.yaml")


def test_toml_workflow(tmp_path: Path) -> None:
    path = tmp_path / "flow.toml"
    path.write_text('name = "t"\n[[steps]]\nname = "a"\nrun = "echo hi"\n')
    wf = load_workflow(path)
    assert wf.name == "t" and wf.steps[0].run == "echo hi"


def test_overrides_and_env_file(tmp_path: Path) -> None:
    assert parse_overrides(["day=2026-11-25", "msg=a=b c"]) == {"day": "2026-11-25", "msg": "a=b c"}
    with pytest.raises(Exception, match="KEY=VALUE"):
        parse_overrides(["1bad=x"])
    env = tmp_path / ".env"
    env.write_text("# comment\nexport A=1\nB='two words'\n\nC=\"q # kept\"\nD=v # note\nE=x#y\n")
    assert read_env_file(env) == {"A": "1", "B": "two words", "C": "q # kept", "D": "v",
                                  "E": "x#y"}
    env.write_text('F="unterminated\n')
    with pytest.raises(WorkflowError, match="unterminated"):
        read_env_file(env)
    env.write_text("A=1\noops\n")
    with pytest.raises(WorkflowError) as info:
        read_env_file(env)
    assert info.value.line == 2


def test_schema_is_json_schema_of_the_file() -> None:
    schema = json_schema()
    props = schema["properties"]
    assert {"steps", "params", "concurrency", "defaults", "notify", "schedule"} <= set(props)
    assert "path" not in props
    step = schema["$defs"]["Step"]["properties"]
    assert {"if", "always", "continue_on_failure", "timeout", "needs"} <= set(step)
    json.dumps(schema)


def test_missing_env_file_is_found_by_validate(write_flow: Callable[..., Path]) -> None:
    err = _error(write_flow, "env_file: nofile\nsteps: [{name: a, run: x}]\n")
    assert (err.line, err.col) == (1, 11) and "env_file 'nofile' not found" in str(err)


def test_resolved_steps_equal_what_model_copy_makes():
    """model._updated stands in for model_copy(update=...) in Workflow._resolve."""
    from flowsh.model import Step, _updated

    step = Step.model_validate({"name": "a", "run": "true", "retries": 2})
    updates = {"timeout": 5.0, "needs": ["x"], "shell": "bash"}
    mine, theirs = _updated(step, updates), step.model_copy(update=updates)
    assert mine == theirs and mine.model_fields_set == theirs.model_fields_set
    assert mine.model_dump(exclude_unset=True) == theirs.model_dump(exclude_unset=True)
    assert step.timeout is None and step.model_fields_set == {"name", "run", "retries"}


def test_the_cycle_collector_is_paused_only_while_loading(tmp_path: Path) -> None:
    """load_workflow pauses gc (its new containers set off full collections) and leaves it
    as it found it, error or not."""
    import gc

    from flowsh.loader import load_workflow

    f = tmp_path / "w.yaml"
    f.write_text("steps: [{name: a, run: 'true'}]\n")
    assert gc.isenabled()
    load_workflow(f)
    assert gc.isenabled()
    f.write_text("steps: [{name: a}]\n")
    with pytest.raises(WorkflowError):
        load_workflow(f)
    assert gc.isenabled()
    gc.disable()
    try:
        f.write_text("steps: [{name: a, run: 'true'}]\n")
        load_workflow(f)
        assert not gc.isenabled()
    finally:
        gc.enable()


@pytest.mark.parametrize(("name", "first"), [
    ("flow.yaml", "#!/usr/bin/env -S flowsh run\n"),  # a comment, in YAML
    ("flow", "# no suffix, no shebang: YAML\n"),
])
def test_a_yaml_file_keeps_its_positions_whatever_its_first_line_and_name(
        tmp_path: Path, cli: Callable[..., Any], name: str, first: str) -> None:
    """The later checks' positions were read by another rule than the file's: a shebang
    made them parse YAML as a bash workflow file, an unknown suffix gave none. Their
    errors lost the line."""
    flow = tmp_path / name
    flow.write_text(first + "name: shb\nexecutor: nope\nsteps:\n  - {name: a, run: \"true\"}\n")
    res = cli("validate", str(flow))
    assert res.returncode == EXIT_USAGE
    assert f"{flow}:3:11: unknown executor 'nope'" in res.stderr
