"""flowsh.foreach: items from each form (real files and commands), instance names, the
joined outputs; state.display_order, which status, the live view and the report share."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import pytest

from flowsh.foreach import (
    MAX_ITEM_BYTES,
    ExpandError,
    Expansion,
    check_items,
    expand,
    instance_names,
    joined_outputs,
    parent_of,
)
from flowsh.model import Step
from flowsh.state import RunRecord, StepRecord, display_order


def _step(foreach: object) -> Step:
    return Step.model_validate({"name": "s", "run": "true", "foreach": foreach,
                                "shell": "bash"})


def test_a_literal_list_is_the_text_as_written() -> None:
    assert expand(_step(["eu", 3, True, " x "]), {}, Path(".")) == ["eu", "3", "true", " x "]


def test_file_lines_relative_to_the_workdir_blank_lines_dropped(tmp_path: Path) -> None:
    (tmp_path / "l.txt").write_bytes(b"a b\n\n  \n\xff\r\nlast")
    got = expand(_step({"file": "l.txt"}), {}, tmp_path)
    assert got == ["a b", "\udcff\r", "last"]  # byte for byte, blank-only lines dropped


def test_a_missing_file_or_a_nul_fails_with_a_message(tmp_path: Path) -> None:
    with pytest.raises(ExpandError, match=r"cannot read nope\.txt"):
        expand(_step({"file": "nope.txt"}), {}, tmp_path)
    (tmp_path / "n.txt").write_bytes(b"a\0b\n")
    with pytest.raises(ExpandError, match="NUL"):
        expand(_step({"file": "n.txt"}), {}, tmp_path)


def _expand_command(step: Step, env: dict[str, str], cwd: Path,
                    timeout: float | None = None) -> list[str]:
    exp = Expansion(step, env, cwd, cwd / "spool", timeout)
    while (items := exp.poll()) is None:
        time.sleep(0.01)
    return items


def test_command_runs_in_the_steps_environment_and_workdir(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "N": "2"}
    got = _expand_command(_step({"command": 'seq "$N"; pwd'}), env, tmp_path)
    assert got == ["1", "2", str(tmp_path)]
    assert list(tmp_path.iterdir()) == []  # its spool files are gone


def test_command_failure_names_its_exit_and_last_error_line(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"]}
    with pytest.raises(ExpandError, match="exited 4: no shards"):
        _expand_command(_step({"command": "echo x; echo no shards >&2; exit 4"}), env,
                        tmp_path)
    with pytest.raises(ExpandError, match="timed out"):
        _expand_command(_step({"command": "sleep 5"}), env, tmp_path, timeout=0.2)


def test_what_the_command_leaves_in_its_group_is_stopped_with_it(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"]}
    step = _step({"command": "sleep 600 >/dev/null 2>&1 & echo $! > bg; echo a"})
    assert _expand_command(step, env, tmp_path) == ["a"]
    bg = int((tmp_path / "bg").read_text())
    end = time.monotonic() + 10
    while os.path.exists(f"/proc/{bg}") and time.monotonic() < end:
        time.sleep(0.01)  # killed; reaped by init once this test's process is its parent
        with contextlib.suppress(ChildProcessError):
            os.waitpid(bg, os.WNOHANG)
    assert not os.path.exists(f"/proc/{bg}")


def test_a_command_that_cannot_start_fails_the_step(tmp_path: Path) -> None:
    step = Step.model_validate({"name": "s", "run": "true", "foreach": {"command": "x"},
                                "shell": "/nonexistent/sh"})
    with pytest.raises(ExpandError, match="could not start"):
        Expansion(step, {}, tmp_path, tmp_path / "spool", None)
    assert list(tmp_path.iterdir()) == []


def test_output_form_reads_what_the_step_sees() -> None:
    assert expand(_step({"output": "L"}), {"L": "x\ny\n"}, Path(".")) == ["x", "y"]
    with pytest.raises(ExpandError, match="no output or variable L"):
        expand(_step({"output": "L"}), {}, Path("."))


def test_names_by_item_only_when_all_are_unique_tokens() -> None:
    assert instance_names("s", ["eu", "us-1", "v2.0"]) == ["s[eu]", "s[us-1]", "s[v2.0]"]
    assert instance_names("s", ["eu", "x y"]) == ["s[0]", "s[1]"]
    assert instance_names("s", ["eu", "eu"]) == ["s[0]", "s[1]"]
    assert instance_names("s", ["a" * 65]) == ["s[0]"]
    assert parent_of("s[eu]") == "s" and parent_of("s") is None


def test_outputs_joined_in_item_order_from_the_items_that_set_them() -> None:
    assert joined_outputs([{"V": "a", "W": "1"}, {}, {"V": "c\nd"}]) == {"V": "a\nc\nd",
                                                                       "W": "1"}
    assert joined_outputs([]) == {}


def test_display_order_puts_items_after_their_step_in_item_order() -> None:
    run = RunRecord(run_id="r", workflow="w", file=None, definition_hash="", params={},
                    step_names=["s", "t"])
    for name in ("t", "s[b]", "s", "s[a]", "s[c]", "u[0]"):
        run.steps[name] = StepRecord(name)
    run.steps["s"].items = ["c", "a", "b"]
    assert display_order(run) == ["s", "s[c]", "s[a]", "s[b]", "t", "u[0]"]


def test_display_order_of_index_names_is_by_index_whatever_the_items() -> None:
    run = RunRecord(run_id="r", workflow="w", file=None, definition_hash="", params={},
                    step_names=["s"])
    run.steps["s"] = StepRecord("s", items=["1", "x y", "0"])
    for name in ("s[2]", "s[1]", "s[0]"):
        run.steps[name] = StepRecord(name)
    assert display_order(run) == ["s", "s[0]", "s[1]", "s[2]"]


def test_an_item_an_environment_variable_cannot_hold_is_refused() -> None:
    check_items(["a", "x" * MAX_ITEM_BYTES])
    with pytest.raises(ExpandError, match="item 1 is 131067 bytes long"):
        check_items(["a", "x" * (MAX_ITEM_BYTES + 1)])
