"""flowsh.yamlsrc: YAML with positions, duplicate keys refused, errors in the user's words."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from flowsh.errors import WorkflowError
from flowsh.loader import load_workflow
from flowsh.model import Workflow
from flowsh.yamlsrc import Positions, describe, parse_yaml

TEXT = """\
name: w
steps:
  - name: a
    run: echo hi
  - name: b
    timeout: 5m
"""


def test_data_and_positions_of_keys_and_values() -> None:
    data, pos = parse_yaml(TEXT, Path("f.yaml"))
    assert data["steps"][1] == {"name": "b", "timeout": "5m"}
    assert pos.find(("steps", 0, "run")) == (4, 10)
    assert pos.find(("steps", 0, "run"), key=True) == (4, 5)
    assert pos.find(("steps", 1)) == (5, 5)
    assert pos.has(("steps", 1, "timeout")) and not pos.has(("steps", 7))
    # an unknown deeper part falls back to the nearest known parent
    assert pos.find(("steps", 1, "nope", "deeper")) == (5, 5)


def test_error_is_file_line_col() -> None:
    _, pos = parse_yaml(TEXT, Path("f.yaml"))
    err = pos.error("bad timeout", ("steps", 1, "timeout"))
    assert str(err) == "f.yaml:6:14: bad timeout"


@pytest.mark.parametrize(("text", "line", "col", "message"), [
    ("a: 1\nb: 2\na: 3\n", 3, 1, "duplicate key 'a'"),
    ("steps:\n  - name: x\n    run: a\n    run: b\n", 4, 5, "duplicate key 'run'"),
    ("? [1, 2]\n: x\n", 1, 3, "mapping keys must be plain strings"),
    ("a: [1, 2\n", 2, 1, "malformed YAML"),
    ("a: 'open\n", 2, 1, "malformed YAML"),
])
def test_parse_errors_with_positions(text: str, line: int, col: int, message: str) -> None:
    with pytest.raises(WorkflowError) as exc:
        parse_yaml(text, Path("f.yaml"))
    assert (exc.value.line, exc.value.col) == (line, col)
    assert message in exc.value.detail


def test_empty_file() -> None:
    with pytest.raises(WorkflowError, match="the file is empty"):
        parse_yaml("# only a comment\n", Path("f.yaml"))


def test_merge_keys_still_work() -> None:
    data, _ = parse_yaml("base: &b {x: 1}\nd:\n  <<: *b\n  y: 2\n", None)
    assert data["d"] == {"x": 1, "y": 2}


def test_hand_set_positions_win() -> None:
    pos = Positions(Path("seed.sh"))
    assert pos.find(("steps", 0)) == (None, None)
    pos.values[("steps", 0)] = (12, 3)
    assert pos.find(("steps", 0, "run")) == (12, 3)
    assert str(pos.error("x", ("steps", 0))) == "seed.sh:12:3: x"


def _errors(data: dict) -> list[dict]:  # type: ignore[type-arg]
    try:
        Workflow.model_validate(data)
    except ValidationError as exc:
        return [dict(e) for e in exc.errors()]
    raise AssertionError("valid")


def test_describe_unknown_key_with_suggestion() -> None:
    data = {"name": "w", "steps": [{"name": "a", "run": "x", "timout": "5s"}]}
    message, loc, is_key = describe(_errors(data)[0], data)
    assert message == "unknown key 'timout' (did you mean 'timeout'?)"
    assert loc == ("steps", 0, "timout") and is_key


def test_describe_names_the_step(write_flow: Callable[..., Path]) -> None:
    path = write_flow("name: w\nsteps:\n  - name: extract\n    run: x\n    retries: lots\n")
    with pytest.raises(WorkflowError) as exc:
        load_workflow(path)
    assert exc.value.line == 5 and exc.value.col == 14
    assert "step 'extract' key 'retries'" in exc.value.detail


@pytest.mark.parametrize("key", ["ON", "NO", "off", "Yes"])
def test_boolean_looking_keys_keep_their_name(key: str) -> None:
    try:
        data, _ = parse_yaml(f"env:\n  {key}: '1'\n", Path("f.yaml"))
    except WorkflowError:
        return  # refused, naming the key: fine too
    assert data["env"] == {key: "1"}


@pytest.mark.parametrize(("written", "want"), [("1.10", "1.10"), ("0755", "0755"), ("12:30", "12:30")])
def test_unquoted_values_reach_the_step_as_written(write_flow: Callable[..., Path],
                                                   written: str, want: str) -> None:
    wf = load_workflow(write_flow(f"name: w\nenv:\n  V: {written}\nsteps:\n  - {{name: a, run: x}}\n"))
    assert wf.env["V"] == want
