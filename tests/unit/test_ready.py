"""flowsh.ready: which steps go now, in file order, and which are skipped and why."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from flowsh.graph import Graph
from flowsh.loader import load_workflow
from flowsh.ready import ReadySet
from flowsh.state import FAILED, PENDING, RUNNING, SKIPPED, SUCCEEDED, SkipReason, StepRecord

FLOW = """
name: w
steps:
  - name: a
    run: 'true'
  - name: b
    run: 'true'
    needs: []
  - name: c
    run: 'true'
    needs: [a]
  - name: d
    run: 'true'
    needs: [a, b]
  - name: soft
    run: 'false'
    needs: []
    continue_on_failure: true
  - name: after_soft
    run: 'true'
    needs: [soft]
  - name: cleanup
    run: 'true'
    always: true
    needs: [c]
"""


def test_a_step_without_needs_follows_the_one_before(write_flow: Callable[..., Path]) -> None:
    wf = load_workflow(write_flow("name: w\nsteps:\n  - {name: x, run: 'true'}\n"
                                  "  - {name: y, run: 'true'}\n"))
    rs = ReadySet(Graph.build(wf), {s.name: s for s in wf.steps})
    recs = {s.name: StepRecord(s.name) for s in wf.steps}
    rs.consider(recs)
    assert take(rs, recs) == [("x", None)]


def setup(write_flow: Callable[..., Path]) -> tuple[ReadySet, dict[str, StepRecord]]:
    wf = load_workflow(write_flow(FLOW))
    rs = ReadySet(Graph.build(wf), {s.name: s for s in wf.steps})
    return rs, {s.name: StepRecord(s.name) for s in wf.steps}


def take(rs: ReadySet, recs: dict[str, StepRecord], *, slots: int = 99,
         failed: bool = False) -> list[tuple[str, object]]:
    got: list[tuple[str, object]] = []
    for name, why in rs.take(recs, lambda: len([g for g in got if g[1] is None]) >= slots,
                             lambda: failed):
        got.append((name, why))
    return got


def test_roots_go_in_file_order(write_flow: Callable[..., Path]) -> None:
    rs, recs = setup(write_flow)
    rs.consider(reversed(list(recs)))
    assert take(rs, recs) == [("a", None), ("b", None), ("soft", None)]


def test_concurrency_keeps_the_rest_queued(write_flow: Callable[..., Path]) -> None:
    rs, recs = setup(write_flow)
    rs.consider(recs)
    assert take(rs, recs, slots=1) == [("a", None)]
    recs["a"].status = RUNNING
    assert take(rs, recs, slots=1) == [("b", None)]  # b was still queued


def test_waiting_until_dependencies_succeed(write_flow: Callable[..., Path]) -> None:
    rs, recs = setup(write_flow)
    for n in ("a", "b"):
        recs[n].status = SUCCEEDED
    rs.consider(["d"])
    assert take(rs, recs) == [("d", None)]
    recs["b"].status = RUNNING
    rs.consider(["c"])
    assert take(rs, recs) == [("c", None)]


def test_failed_dependency_skips_downstream(write_flow: Callable[..., Path]) -> None:
    rs, recs = setup(write_flow)
    recs["a"].status = FAILED
    recs["b"].status = SUCCEEDED
    rs.consider(["c", "d"])
    assert take(rs, recs, failed=True) == [("c", SkipReason.UPSTREAM), ("d", SkipReason.UPSTREAM)]


def test_run_failed_skips_unstarted_ready_steps(write_flow: Callable[..., Path]) -> None:
    rs, recs = setup(write_flow)
    recs["a"].status = FAILED
    rs.consider(["b"])
    assert take(rs, recs, failed=True) == [("b", SkipReason.RUN_FAILED)]


def test_continue_on_failure_and_condition_false_satisfy(write_flow: Callable[..., Path]) -> None:
    rs, recs = setup(write_flow)
    recs["soft"].status = FAILED
    rs.consider(["after_soft"])
    assert take(rs, recs) == [("after_soft", None)]
    recs["a"].status = SKIPPED
    recs["a"].skip_reason = SkipReason.CONDITION
    rs.consider(["c"])
    assert take(rs, recs) == [("c", None)]
    recs["b"].status, recs["b"].skip_reason = SKIPPED, SkipReason.EXIT_CODE  # skip_on
    rs.consider(["d"])
    assert take(rs, recs) == [("d", None)]


def test_a_record_from_before_skip_reasons(write_flow: Callable[..., Path]) -> None:
    rs, recs = setup(write_flow)
    recs["a"].status, recs["a"].message = SKIPPED, "condition false"  # no skip_reason kept
    rs.consider(["c"])
    assert take(rs, recs) == [("c", None)]


def test_skipped_by_a_failure_blocks(write_flow: Callable[..., Path]) -> None:
    rs, recs = setup(write_flow)
    recs["a"].status, recs["a"].skip_reason = SKIPPED, SkipReason.RUN_FAILED
    rs.consider(["c"])
    assert take(rs, recs, failed=True) == [("c", SkipReason.UPSTREAM)]


def test_always_runs_once_dependencies_are_final(write_flow: Callable[..., Path]) -> None:
    rs, recs = setup(write_flow)
    recs["c"].status = RUNNING
    rs.consider(["cleanup"])
    assert take(rs, recs, failed=True) == []
    recs["c"].status = SKIPPED
    recs["c"].message = "upstream failed"
    rs.consider(["cleanup"])
    assert take(rs, recs, failed=True) == [("cleanup", None)]


def test_non_pending_candidates_dropped(write_flow: Callable[..., Path]) -> None:
    rs, recs = setup(write_flow)
    recs["a"].status = SUCCEEDED
    rs.consider(["a", "a"])
    assert take(rs, recs) == []
    assert recs["b"].status == PENDING


def test_a_step_not_selected_passes_order_and_failure_through(
        write_flow: Callable[..., Path]) -> None:
    rs, recs = setup(write_flow)
    rs.pass_through = frozenset({"a", "cleanup"})
    rs.consider(recs)
    # a needs nothing: skipped at once, with no slot (none is free); c may go after it.
    assert take(rs, recs, slots=0) == [("a", SkipReason.NOT_SELECTED)]
    recs["a"].status, recs["a"].skip_reason = SKIPPED, SkipReason.NOT_SELECTED
    rs.consider(["c", "d"])
    assert take(rs, recs) == [("b", None), ("soft", None), ("c", None)]
    # d waits for b, as it would without the selection.
    recs["b"].status = FAILED
    rs.consider(["d"])
    assert take(rs, recs) == [("d", SkipReason.UPSTREAM)]


def test_a_step_not_selected_after_a_failure_blocks_its_dependents(
        write_flow: Callable[..., Path]) -> None:
    wf = load_workflow(write_flow("name: w\nsteps:\n  - {name: x, run: 'true'}\n"
                                  "  - {name: y, run: 'true'}\n  - {name: z, run: 'true'}\n"))
    rs = ReadySet(Graph.build(wf), {s.name: s for s in wf.steps})
    rs.pass_through = frozenset({"y"})
    recs = {s.name: StepRecord(s.name) for s in wf.steps}
    rs.consider(recs)
    assert take(rs, recs) == [("x", None)]
    recs["x"].status = FAILED
    rs.consider(["y"])
    assert take(rs, recs) == [("y", SkipReason.NOT_SELECTED)]
    recs["y"].status, recs["y"].skip_reason = SKIPPED, SkipReason.NOT_SELECTED
    rs.consider(["z"])
    assert take(rs, recs) == [("z", SkipReason.UPSTREAM)]
