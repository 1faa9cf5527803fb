"""flowsh.select: which steps a selection names, and what the steps left out hand on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from flowsh.engine import RunOptions, run_workflow
from flowsh.errors import UsageError
from flowsh.graph import Graph
from flowsh.loader import load_workflow
from flowsh.model import Workflow
from flowsh.select import borrow, choose, needed, split_names
from flowsh.state import SKIPPED, SUCCEEDED, SkipReason
from flowsh.store import open_backend

FLOW = """
name: sel
steps:
  - {name: a, run: 'echo A=$X >> "$FLOWSH_OUTPUT"'}
  - {name: b, needs: [a], run: 'echo B=$A$X >> "$FLOWSH_OUTPUT"'}
  - {name: c, needs: [b], run: 'echo "$A $B" > "$OUT"'}
  - {name: side, needs: [], run: 'true'}
params: {X: "1", OUT: ""}
"""


@pytest.fixture
def wf(write_flow: Callable[..., Path]) -> Workflow:
    return load_workflow(write_flow(FLOW))


def test_split_names() -> None:
    assert split_names(["a,b", " c ", ",,d"]) == ["a", "b", "c", "d"]


def test_choose(wf: Workflow) -> None:
    g = Graph.build(wf)
    assert choose(wf, g) is None
    assert choose(wf, g, only=["c,a"]) == {"a", "c"}
    assert choose(wf, g, from_="b") == {"b", "c"}
    assert choose(wf, g, until="b") == {"a", "b"}
    assert choose(wf, g, from_="b", until="b") == {"b"}
    assert choose(wf, g, from_="a", until="c") == {"a", "b", "c"}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"only": ["bb"]}, "--only bb: no step 'bb' in .*flow.yaml \\(did you mean 'b'\\?\\)"),
    ({"from_": "zzzzz"}, "--from zzzzz: no step 'zzzzz' in .*flow.yaml$"),
    ({"only": ["a"], "until": "b"}, "--only does not combine"),
    ({"from_": "c", "until": "a"}, "no step is both; 'a' is not downstream of 'c'"),
    ({"only": [" , "]}, "--only needs a step name"),
])
def test_choose_refuses(wf: Workflow, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        choose(wf, Graph.build(wf), **kwargs)  # type: ignore[arg-type]


def test_needed_names_the_first_step_that_needs_each(wf: Workflow) -> None:
    g = Graph.build(wf)
    assert needed(g, {"a", "b", "side"}, {"c"}) == {"a": "c", "b": "c"}
    assert needed(g, {"b"}, {"a", "c"}) == {"b": "c"}
    assert needed(g, {"c"}, {"a", "b"}) == {}


def test_borrow_takes_each_step_from_its_latest_successful_run(
        wf: Workflow, tmp_path: Path) -> None:
    out = tmp_path / "got"
    runs_dir = tmp_path / "runs"
    backend = open_backend(None)
    try:
        with pytest.raises(UsageError, match="step 'c' needs the outputs of 'a'"):
            borrow(backend, wf, {"a": "c"}, lambda d, n, o: o, runs_dir)
        full = run_workflow(wf, RunOptions(params={"X": "1", "OUT": str(out)}, backend=backend))
        assert full.status == SUCCEEDED and out.read_text() == "1 11\n"
        # A later run of b alone: b's outputs are newest there, a's still in the first.
        run_workflow(wf, RunOptions(params={"X": "2", "OUT": str(out)}, backend=backend,
                                    select={"b"}))
        got = borrow(backend, wf, {"a": "c", "b": "c"}, lambda d, n, o: o, runs_dir)
        assert got == {"a": {"A": "1"}, "b": {"B": "12"}}
        # A run that failed is never a source.
        bad = run_workflow(wf, RunOptions(params={"X": "3", "OUT": "/nonexistent/x"},
                                          backend=backend, select={"a", "c"}))
        assert bad.status != SUCCEEDED
        assert borrow(backend, wf, {"a": "c"}, lambda d, n, o: o, runs_dir) == {"a": {"A": "1"}}
    finally:
        backend.close()


def test_a_selection_run_records_steps_left_out(wf: Workflow, tmp_path: Path) -> None:
    out = tmp_path / "got"
    run_workflow(wf, RunOptions(params={"OUT": str(out)}))
    run = run_workflow(wf, RunOptions(params={"X": "7", "OUT": str(out)}, select={"a", "c"}))
    assert run.status == SUCCEEDED
    for name in ("b", "side"):
        rec = run.steps[name]
        assert (rec.status, rec.skip_reason, rec.message) == (
            SKIPPED, SkipReason.NOT_SELECTED, "not selected")
        assert rec.attempts == 0
    assert out.read_text() == "7 11\n"  # a ran now; b handed on its output of the first run
