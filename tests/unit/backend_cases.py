"""What every state backend must do, shared by test_builtin_state_sqlite and _json."""

from __future__ import annotations

import pytest

from flowsh.errors import NotFoundError, UsageError
from flowsh.state import (
    FAILED,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    RunRecord,
    SkipReason,
    StateBackend,
    StepRecord,
)


def record(run_id: str, workflow: str = "w", started: float = 1000.0) -> RunRecord:
    return RunRecord(run_id=run_id, workflow=workflow, file="/x/flow.yaml",
                     definition_hash="abc", params={"P": "1", "NOTE": "é\nline"},
                     started_at=started, pid=42, host="h",
                     steps={n: StepRecord(n) for n in ("a", "b")}, step_names=["a", "b"])


def round_trip(backend: StateBackend) -> None:
    run = record("20261205T000000-aaaa0001")
    backend.create_run(run)
    a = run.steps["a"]
    a.status, a.attempts, a.exit_code, a.started_at, a.ended_at = SUCCEEDED, 2, 0, 1001.0, 1002.5
    a.outputs = {"K": "v\nw"}
    a.items = ["eu", "x y", ""]  # a foreach step's recorded list (FOREACH-3)
    backend.save_step(run, a)
    b = run.steps["b"]
    b.status, b.skip_reason, b.message = SKIPPED, SkipReason.EXIT_CODE, "exit code 3 (skip_on)"
    backend.save_step(run, b)
    run.status, run.exit_code, run.ended_at = FAILED, 1, 1003.0
    backend.update_run(run)
    got = backend.load_run(run.run_id)
    assert got.to_dict() == run.to_dict()
    assert list(got.steps) == ["a", "b"]
    assert got.steps["b"].skip_reason is SkipReason.EXIT_CODE and got.steps["b"].lets_dependents_run


def prefixes_and_missing(backend: StateBackend) -> None:
    backend.create_run(record("20261205T000000-aaaa0001"))
    backend.create_run(record("20261205T000000-aaaa0002"))
    assert backend.load_run("20261205T000000-aaaa0002").run_id.endswith("0002")
    with pytest.raises(NotFoundError):
        backend.load_run("nope")
    with pytest.raises(UsageError, match="ambiguous"):
        backend.load_run("20261205T000000-aaaa")


def listing(backend: StateBackend) -> None:
    for i, wf in enumerate(["w", "v", "w"]):
        run = record(f"r{i}", wf, started=1000.0 + i)
        backend.create_run(run)
    r0 = backend.load_run("r0")
    r0.status = SUCCEEDED
    backend.update_run(r0)
    assert [r.run_id for r in backend.list_runs()] == ["r2", "r1", "r0"]
    assert [r.run_id for r in backend.list_runs("w")] == ["r2", "r0"]
    assert [r.run_id for r in backend.list_runs(limit=1)] == ["r2"]
    assert [r.run_id for r in backend.list_runs(statuses=frozenset({RUNNING}))] == ["r2", "r1"]
    assert backend.delete_runs(["r0", "r1", "zzz"]) == 2
    assert [r.run_id for r in backend.list_runs()] == ["r2"]


def heartbeat(backend: StateBackend) -> None:
    run = record("hb1")
    backend.create_run(run)
    run.heartbeat = 5000.0
    backend.heartbeat(run)
    assert (backend.load_run("hb1").heartbeat or 0) > 0


def call_links(backend: StateBackend) -> None:
    """A child run names its parent run and step; the call step names its child run."""
    parent, child = record("20261205T000000-aaaa0101"), record("20261205T000000-aaaa0102")
    child.parent_run, child.parent_step = parent.run_id, "a"
    backend.create_run(parent)
    backend.create_run(child)
    parent.steps["a"].child_run = child.run_id
    backend.save_step(parent, parent.steps["a"])
    assert backend.load_run(parent.run_id).steps["a"].child_run == child.run_id
    assert backend.load_run(parent.run_id).parent_run is None
    got = backend.load_run(child.run_id)
    assert (got.parent_run, got.parent_step) == (parent.run_id, "a")
    listed = {r.run_id: r for r in backend.list_runs()}
    assert listed[child.run_id].parent_step == "a"
