"""flowsh.resume: run ids, definition hashes, new and resumed run records."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from flowsh.graph import Graph
from flowsh.loader import load_workflow
from flowsh.resume import definition_hash, new_run, new_run_id, steps_again, take_up
from flowsh.state import FAILED, PENDING, RUNNING, SUCCEEDED
from flowsh.store import open_backend

FLOW = """
name: w
steps:
  - name: a
    run: 'true'
  - name: b
    run: 'false'
  - name: c
    run: 'true'
  - name: final
    run: 'true'
    always: true
"""


def test_run_id_format_and_uniqueness() -> None:
    ids = {new_run_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(re.fullmatch(r"\d{8}T\d{6}-[0-9a-f]{8}", i) for i in ids)


def test_run_ids_unique_across_processes() -> None:
    code = "from flowsh.resume import new_run_id; print(*(new_run_id() for _ in range(200)))"
    outs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout.split() for _ in range(2)]
    assert len(set(outs[0]) | set(outs[1])) == 400


def test_definition_hash_stable_and_sensitive(write_flow: Callable[..., Path],
                                              tmp_path: Path) -> None:
    a = load_workflow(write_flow(FLOW))
    moved = load_workflow(write_flow(FLOW, name="elsewhere.yaml"))
    assert definition_hash(a) == definition_hash(load_workflow(a.path))
    assert definition_hash(a) == definition_hash(moved)  # the path is not the definition
    assert re.fullmatch(r"[0-9a-f]{16}", definition_hash(a))
    changed = load_workflow(write_flow(FLOW.replace("'false'", "'exit 2'"), name="c.yaml"))
    assert definition_hash(changed) != definition_hash(a)
    code = ("import sys; from flowsh.loader import load_workflow; from flowsh.resume import "
            "definition_hash; print(definition_hash(load_workflow(sys.argv[1])))")
    other = subprocess.run([sys.executable, "-c", code, str(a.path)], capture_output=True,
                           text=True, check=True).stdout.strip()
    assert other == definition_hash(a)


def test_new_run_record(write_flow: Callable[..., Path]) -> None:
    wf = load_workflow(write_flow(FLOW))
    backend = open_backend()
    try:
        run = new_run(backend, wf, "20261205T000000-00000001", {"P": "1"})
        loaded = backend.load_run(run.run_id)
        assert loaded.status == RUNNING and loaded.params == {"P": "1"}
        assert loaded.definition_hash == definition_hash(wf)
        assert list(loaded.steps) == ["a", "b", "c", "final"]
        assert all(r.status == PENDING for r in loaded.steps.values())
    finally:
        backend.close()


def _finished(backend, wf):  # type: ignore[no-untyped-def]
    run = new_run(backend, wf, "20261205T000000-00000002", {})
    for name, status in (("a", SUCCEEDED), ("b", FAILED), ("final", SUCCEEDED)):
        rec = run.steps[name]
        rec.status, rec.attempts = status, 1
        backend.save_step(run, rec)
    run.status = FAILED
    backend.update_run(run)
    return backend.load_run(run.run_id)


def test_take_up_reruns_what_did_not_succeed_and_always(write_flow: Callable[..., Path]) -> None:
    wf = load_workflow(write_flow(FLOW))
    backend = open_backend()
    try:
        prior = _finished(backend, wf)
        run = take_up(backend, wf, prior, Graph.build(wf), {}, None)
        st = {n: r.status for n, r in backend.load_run(run.run_id).steps.items()}
        assert st == {"a": SUCCEEDED, "b": PENDING, "c": PENDING, "final": PENDING}
        assert run.status == RUNNING and run.steps["b"].attempts == 1  # attempts carry on
    finally:
        backend.close()


def test_a_succeeded_always_step_runs_again_only_after_a_step_upstream(
        write_flow: Callable[..., Path]) -> None:
    """RESUME-1: `final` needs only `a` (kept): it is kept; `after` needs `b` (runs again):
    it runs again, the `finally` of what it follows."""
    wf = load_workflow(write_flow(FLOW.replace("    always: true", "    always: true\n"
                                               "    needs: [a]\n") + """  - name: after
    run: 'true'
    always: true
    needs: [b]
"""))
    backend = open_backend()
    try:
        prior = _finished(backend, wf)
        rec = prior.steps["after"]
        rec.status = SUCCEEDED
        assert steps_again(wf, Graph.build(wf), prior, None) == {"b", "c", "after"}
    finally:
        backend.close()


def test_take_up_only_and_dropped_steps(write_flow: Callable[..., Path]) -> None:
    wf = load_workflow(write_flow(FLOW))
    backend = open_backend()
    try:
        prior = _finished(backend, wf)
        smaller = load_workflow(write_flow(FLOW.split("  - name: final")[0], name="s.yaml"))
        run = take_up(backend, smaller, prior, Graph.build(smaller), {}, {"a"})
        assert {n: r.status for n, r in run.steps.items()} == {
            "a": PENDING, "b": FAILED, "c": PENDING}
    finally:
        backend.close()
