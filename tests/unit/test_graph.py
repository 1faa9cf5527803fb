"""flowsh.graph: order, cycles (printed), descendants, levels, renderings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from flowsh.errors import WorkflowError
from flowsh.graph import Graph
from flowsh.loader import load_workflow


def g(needs: dict[str, list[str]]) -> Graph:
    return Graph(list(needs), needs)


def test_order_respects_needs_and_file_order() -> None:
    graph = g({"c": ["a"], "a": [], "b": [], "d": ["c", "b"]})
    assert graph.order == ["a", "b", "c", "d"]
    for n, deps in graph.needs.items():
        assert all(graph.order.index(d) < graph.order.index(n) for d in deps)


def test_dependents() -> None:
    graph = g({"a": [], "b": ["a"], "c": ["a"]})
    assert graph.dependents == {"a": ["b", "c"], "b": [], "c": []}


def test_descendants() -> None:
    graph = g({"a": [], "b": ["a"], "c": ["b"], "d": []})
    assert graph.descendants(["a"]) == {"b", "c"}
    assert graph.descendants(["d"]) == set()


def test_levels_by_longest_path() -> None:
    graph = g({"a": [], "b": ["a"], "c": ["a", "b"], "d": []})
    assert graph.levels() == [["a", "d"], ["b"], ["c"]]
    assert g({}).levels() == []


def test_cycle_printed_in_run_order(write_flow: Callable[..., Path]) -> None:
    path = write_flow("""
        name: w
        steps:
          - name: ok
            run: 'true'
          - name: a
            run: 'true'
            needs: [c]
          - name: b
            run: 'true'
            needs: [a]
          - name: c
            run: 'true'
            needs: [b]
    """)
    with pytest.raises(WorkflowError) as exc:
        load_workflow(path)
    msg = str(exc.value)
    assert "dependency cycle:" in msg
    cycle = msg.split("dependency cycle: ")[1].split(" -> ")
    assert cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}
    # each name runs before the next: a needs c, so c -> a
    assert "c -> a" in msg
    assert msg.startswith(f"{path}:")  # FILE:LINE


def test_build_without_positions_raises_workflow_error() -> None:
    class S:
        def __init__(self, name: str, needs: list[str]) -> None:
            self.name, self.needs = name, needs

    class W:
        path = "wf.yaml"
        steps = [S("x", ["y"]), S("y", ["x"])]

    with pytest.raises(WorkflowError, match=r"^wf.yaml: dependency cycle: (x -> y -> x|y -> x -> y)"):
        Graph.build(W())  # type: ignore[arg-type]


def test_renderings() -> None:
    graph = g({"a": [], 'b"q': ["a"]})
    status = {"a": "succeeded", 'b"q': "failed"}
    ascii_ = graph.render("ascii", status)
    assert ascii_.splitlines() == ["a [succeeded]", '  └─ b"q [failed]  <- a']
    mermaid = graph.render("mermaid", status)
    assert 's1["b#quot;q"]' in mermaid and "s0 --> s1" in mermaid and "class s1 failed" in mermaid
    dot = graph.render("dot", status)
    assert '"a" -> "b\\"q";' in dot and "fillcolor=salmon" in dot and dot.endswith("}")
